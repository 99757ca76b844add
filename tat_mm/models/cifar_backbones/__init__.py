"""The small CIFAR networks of the distillation literature (CRD / TaT Table 1), as mmpretrain backbones.

mmpretrain has none of them. Importing this package registers, in ``mmpretrain.registry.MODELS``:

* ``CIFARResNet``: ResNet-8/14/20/32/44/56/110 and ResNet-8x4/32x4 (``channels`` argument),
* ``CIFARWideResNet``: WRN-d-k, e.g. WRN-40-2, WRN-16-2, WRN-40-1,
* ``CIFARVGG``: VGG-8/11/13/16/19 with BN.

The definitions follow the CRD code base (github.com/HobbitLong/RepDistiller, ``models/``), which the
CIFAR-100 results of TaT and most distillation papers use.
"""
from .cifar_resnet import CIFARResNet
from .cifar_vgg import CIFARVGG
from .wide_resnet import CIFARWideResNet

__all__ = ['CIFARResNet', 'CIFARWideResNet', 'CIFARVGG']
