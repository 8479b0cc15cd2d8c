"""What every layer shares and `cnnprobe --help` may import: vocabularies, errors, formats, the cache. No torch."""
