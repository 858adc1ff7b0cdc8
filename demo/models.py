"""Small real models for the demo and the torch benchmark.

Each builder returns (model, example input), seeded so every process
builds identical weights. Sizes are chosen so a cold torch.compile takes
seconds, not minutes, on a small CPU machine; inference only (eval mode).
"""

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """A pre-norm transformer block: attention and an MLP, residuals."""

    def __init__(self, dim=64, heads=4, hidden=256):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        q = q.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        k = k.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        v = v.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class SmallCNN(nn.Module):
    """Two conv stages with batch norm, pooling and a linear head."""

    def __init__(self, classes=10):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.b1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.b2 = nn.BatchNorm2d(32)
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = F.relu(self.b2(self.c2(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.head(x)


def mlp():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 256),
                      nn.GELU(), nn.Linear(256, 10))
    return m.eval(), torch.randn(32, 128)


def transformer():
    torch.manual_seed(0)
    return Block().eval(), torch.randn(4, 32, 64)


def cnn():
    torch.manual_seed(0)
    return SmallCNN().eval(), torch.randn(8, 3, 32, 32)


MODELS = {"transformer": transformer, "cnn": cnn, "mlp": mlp}
