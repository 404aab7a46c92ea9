"""torchvision's CNN classifiers (AlexNet, ResNet-18, VGG-16) with the package's layer names and roles; every
module of its own gets its own activation module, so forward hooks never see one module called twice."""

from __future__ import annotations

from collections import OrderedDict

import torchvision
from torch import nn

from cnnvis.models.base import (CONV_STACK_ROLES, IMAGENET_MEAN, IMAGENET_STD, RESNET18_ROLES, VGG16_ROLES,
                                ImageClassifier, Normalize)
from cnnvis.models.weights import _torchvision_weights


def torchvision_alexnet(num_classes=1000, pretrained=False, input_size=224):
    """torchvision's AlexNet (64-192-384-256-256, no LRN: the variant its IMAGENET1K_V1 weights fit) with the
    same layer names as ``alexnet``: conv1..conv5 (rectified), pool1, pool2, pool5, fc6..fc8."""
    net = torchvision.models.alexnet()
    if pretrained:
        net.load_state_dict(_torchvision_weights("alexnet"))
    names, index = [], 1
    for m in net.features:
        if isinstance(m, nn.Conv2d):
            names.append(f"conv{index}")
        elif isinstance(m, nn.ReLU):
            m.inplace = False
            names.append(f"relu{index}")
            index += 1
        else:
            names.append(f"pool{index - 1}")
    features = nn.Sequential(OrderedDict(zip(names, net.features)))
    layers = {n.replace("relu", "conv"): f"features.{n}" for n in names if n.startswith("relu")}
    layers.update({n: f"features.{n}" for n in names if n.startswith("pool")})
    for m in net.classifier:
        if isinstance(m, nn.ReLU):
            m.inplace = False
    classifier = nn.Sequential(OrderedDict(zip(
        ["drop6", "fc6", "relu6", "drop7", "fc7", "relu7", "fc8"], net.classifier)))
    layers.update(fc6="classifier.relu6", fc7="classifier.relu7", fc8="classifier.fc8")
    pool = nn.Sequential(net.avgpool, nn.Flatten())
    return ImageClassifier(Normalize(IMAGENET_MEAN, IMAGENET_STD), features, pool, classifier, layers, input_size,
                           CONV_STACK_ROLES)


def resnet18(num_classes=1000, pretrained=False, input_size=224):
    net = torchvision.models.resnet18()
    if pretrained:
        net.load_state_dict(_torchvision_weights("resnet18"))
    features = nn.Sequential(OrderedDict(
        (name, getattr(net, name))
        for name in ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    ))
    # torchvision's BasicBlock calls one ReLU module twice; give each call its own module.
    for block in [b for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer]:
        block.forward = _basic_block_forward.__get__(block)
        block.relu_out = nn.ReLU(inplace=False)
        block.relu.inplace = False
    net.relu.inplace = False
    layers = {"conv1": "features.relu", "pool1": "features.maxpool",
              **{f"layer{i}": f"features.layer{i}" for i in range(1, 5)}, "fc": "classifier.fc"}
    classifier = nn.Sequential(OrderedDict(fc=net.fc))
    model = ImageClassifier(Normalize(IMAGENET_MEAN, IMAGENET_STD), features,
                            nn.Sequential(net.avgpool, nn.Flatten()), classifier, layers, input_size,
                            RESNET18_ROLES)
    return model


def _basic_block_forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu_out(out + identity)


def vgg16(num_classes=1000, pretrained=False, input_size=224):
    net = torchvision.models.vgg16()
    if pretrained:
        net.load_state_dict(_torchvision_weights("vgg16"))
    names, block, index = [], 1, 1
    for m in net.features:
        if isinstance(m, nn.Conv2d):
            names.append(f"conv{block}_{index}")
        elif isinstance(m, nn.ReLU):
            m.inplace = False
            names.append(f"relu{block}_{index}")
            index += 1
        else:
            names.append(f"pool{block}")
            block, index = block + 1, 1
    features = nn.Sequential(OrderedDict(zip(names, net.features)))
    layers = {n.replace("relu", "conv"): f"features.{n}" for n in names if n.startswith("relu")}
    layers.update({n: f"features.{n}" for n in names if n.startswith("pool")})
    fc = net.classifier  # Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear
    for m in fc:
        if isinstance(m, nn.ReLU):
            m.inplace = False
    classifier = nn.Sequential(OrderedDict(zip(
        ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"], fc)))
    layers.update(fc6="classifier.relu6", fc7="classifier.relu7", fc8="classifier.fc8")
    pool = nn.Sequential(net.avgpool, nn.Flatten())
    return ImageClassifier(Normalize(IMAGENET_MEAN, IMAGENET_STD), features, pool, classifier, layers, input_size,
                           VGG16_ROLES)
