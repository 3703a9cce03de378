"""Backbones: ``registry.py`` (names -> builders, C3-C5 feature layers, ImageNet weights), ``normalization.py``
(pixels to what the weights expect), ``batchnorm.py`` (folding), ``mobilenet_multi_avg.py`` and
``torchvision/`` (the torchvision ResNet, its weights and PyTorch state dicts). docs/adding-a-backbone.md says
which files a new family touches."""
