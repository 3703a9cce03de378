"""torchvision's ResNet in Keras: ``resnet.py`` (the network), ``weights.py`` (its weights from a state dict),
``state_dict.py`` (reading ``.pth`` and ``.safetensors``)."""
