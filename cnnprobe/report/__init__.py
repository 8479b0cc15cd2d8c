"""Every byte cnnprobe prints or writes: tables, JSON and files over the records the API returns."""
