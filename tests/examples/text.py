"""A small text CNN over token ids (BERT's vocabulary of 30522), one 1-D convolution over the embeddings:
the README's tour.

    cnnprobe bench tests/examples/text.py:Net --input-size 256 --input-dtype long --input-range 0,30522
"""

from torch import nn


class Net(nn.Module):
    def __init__(self, vocabulary: int = 30522, width: int = 64, num_classes: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, width)
        self.conv = nn.Sequential(nn.Conv1d(width, 128, kernel_size=5, padding=2), nn.ReLU(), nn.AdaptiveMaxPool1d(1))
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, tokens):
        x = self.embedding(tokens).transpose(1, 2)  # batch × width × length, as Conv1d wants
        return self.classifier(self.conv(x).flatten(1))
