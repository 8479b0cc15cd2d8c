import torch

x = undefined_name + 1
