"""The teacher's own preprocessing, re-made from the student's preprocessed batch.

The data pipeline and the data preprocessor are the student's; a teacher trained with another
normalisation (a caffe-style detector: BGR, std 1; an RGB pytorch-style student) must not see the
student's numbers. Normalisation, channel order and padding are affine per channel, so the
teacher's input is re-made exactly from the student's batch — whatever batch augmentations
(Mixup, CutMix, resizing) the student's preprocessor applied, since they mix or move pixels of
the normalised images and commute with a per-channel affine map:

* undo the student's normalisation and channel order, apply the teacher's (one fused
  multiply-add per pixel);
* re-fill the padding (outside each sample's ``img_shape``) with the teacher's pad value;
* pad the canvas further when the teacher pads to a divisor the student's canvas is not a
  multiple of (the teacher's maps are then larger than the student's: the distill pair says so).

A fixed pad size (mmseg's ``size``) describes the training crop, which is the student's data: the
teacher sees the student's canvas. When the two preprocessors agree, nothing is built and the
teacher gets the student's batch as it is (no extra cost).
"""
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ImageNormalization:
    """What a data preprocessor does to an image's pixel values and canvas.

    ``preprocessed = (channels(raw) - mean) / std``, then padded with ``pad_value`` to a multiple of
    ``pad_divisor``.
    """
    mean: torch.Tensor  # (C, ) in the output channel order
    std: torch.Tensor  # (C, )
    reverse_channels: bool  # BGR <-> RGB of 3-channel images
    pad_value: float
    pad_divisor: int
    name: str  # class name, for messages

    def describe(self) -> str:
        return (f'{self.name}(mean={[round(v, 3) for v in self.mean.tolist()]}, '
                f'std={[round(v, 3) for v in self.std.tolist()]}, '
                f'channel order {"reversed" if self.reverse_channels else "kept"}, '
                f'pad_value={self.pad_value}, pad divisor={self.pad_divisor})')


def read_normalization(preprocessor: nn.Module) -> Optional[ImageNormalization]:
    """The normalisation of an mmengine / mmdet / mmseg / mmpretrain image data preprocessor.

    Args:
        preprocessor (nn.Module): The model's ``data_preprocessor``.

    Returns:
        ImageNormalization | None: None for a preprocessor of unknown kind.
    """
    if hasattr(preprocessor, '_channel_conversion'):  # mmengine ImgDataPreprocessor, mmdet
        reverse, pad_value = preprocessor._channel_conversion, preprocessor.pad_value
        divisor = preprocessor.pad_size_divisor
    elif hasattr(preprocessor, 'channel_conversion'):  # mmseg SegDataPreProcessor
        reverse, pad_value = preprocessor.channel_conversion, preprocessor.pad_val
        divisor = preprocessor.size_divisor or 1
    elif hasattr(preprocessor, 'to_rgb'):  # mmpretrain ClsDataPreprocessor
        reverse, pad_value = preprocessor.to_rgb, preprocessor.pad_value
        divisor = preprocessor.pad_size_divisor
    else:
        return None
    if getattr(preprocessor, '_enable_normalize', False):
        mean = torch.as_tensor(preprocessor.mean, dtype=torch.float64).flatten().cpu()
        std = torch.as_tensor(preprocessor.std, dtype=torch.float64).flatten().cpu()
    else:
        mean, std = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    return ImageNormalization(mean, std, bool(reverse), float(pad_value), int(divisor or 1),
                              type(preprocessor).__name__)


def _same_unknown_preprocessors(student: nn.Module, teacher: nn.Module) -> bool:
    """Two preprocessors of an unknown kind: the same class with the same settings and buffers."""
    if type(student) is not type(teacher):
        return False

    def settings(module):
        return {k: v for k, v in vars(module).items()
                if not k.startswith('_') and isinstance(v, (bool, int, float, str, tuple, list))}

    buffers_s, buffers_t = dict(student.named_buffers()), dict(teacher.named_buffers())
    return settings(student) == settings(teacher) and buffers_s.keys() == buffers_t.keys() and all(
        torch.equal(buffers_s[k].cpu(), buffers_t[k].cpu()) for k in buffers_s)


class TeacherPreprocessing(nn.Module):
    """Turns the student's preprocessed batch into the batch the teacher's preprocessor would give.

    Build it with :func:`build_teacher_preprocessing` (None when nothing differs).

    Args:
        student (ImageNormalization): The student's preprocessing.
        teacher (ImageNormalization): The teacher's preprocessing.
    """

    def __init__(self, student: ImageNormalization, teacher: ImageNormalization):
        super().__init__()
        channels = max(len(student.mean), len(student.std), len(teacher.mean), len(teacher.std))
        if channels != 1 and any(len(v) not in (1, channels) for v in
                                 (student.mean, student.std, teacher.mean, teacher.std)):
            raise ValueError(
                'The teacher cannot get its own preprocessing: the student normalises '
                f'{len(student.mean)} channels ({student.describe()}) and the teacher '
                f'{len(teacher.mean)} ({teacher.describe()}).')

        def per_channel(values):
            return values.expand(channels) if len(values) == 1 else values

        s_mean, s_std = per_channel(student.mean), per_channel(student.std)
        t_mean, t_std = per_channel(teacher.mean), per_channel(teacher.std)
        # The teacher's channel c holds the student's channel perm[c].
        self.reverse_channels = student.reverse_channels != teacher.reverse_channels
        if self.reverse_channels and channels not in (1, 3):
            raise ValueError('The teacher cannot get its own preprocessing: the channel orders '
                             f'differ but the images have {channels} channels, not 3.')
        perm = [2, 1, 0] if self.reverse_channels and channels == 3 else list(range(channels))
        # teacher = (student * s_std + s_mean)[perm] - t_mean) / t_std = student[perm] * a + b
        scale = s_std[perm] / t_std
        shift = (s_mean[perm] - t_mean) / t_std
        self.register_buffer('scale', scale.float().view(1, -1, 1, 1), persistent=False)
        self.register_buffer('shift', shift.float().view(1, -1, 1, 1), persistent=False)
        self.perm = perm
        self.renormalize = bool(self.reverse_channels
                                or not torch.allclose(scale, torch.ones_like(scale))
                                or not torch.allclose(shift, torch.zeros_like(shift), atol=1e-6))
        # Where the student padded, re-normalisation gives this; the teacher wants its pad value.
        student_pad = (student.pad_value * s_std[perm] + s_mean[perm] - t_mean) / t_std
        self.pad_value = teacher.pad_value
        self.refill_padding = not torch.allclose(student_pad, torch.full_like(student_pad,
                                                                             teacher.pad_value),
                                                 atol=1e-6)
        # The student's canvas is a multiple of the teacher's divisor unless the divisors say not.
        self.pad_divisor = teacher.pad_divisor if student.pad_divisor % teacher.pad_divisor else 1
        self.student, self.teacher = student, teacher

    @property
    def is_identity(self) -> bool:
        """bool: The teacher's input would be the student's batch unchanged."""
        return not (self.renormalize or self.refill_padding or self.pad_divisor > 1)

    def forward(self, inputs: torch.Tensor, data_samples: Optional[Sequence] = None) -> torch.Tensor:
        """Return the teacher's input for the student's preprocessed ``inputs`` (B, C, H, W).

        Args:
            inputs (torch.Tensor): The student's preprocessed batch.
            data_samples (Sequence, optional): The batch's data samples; their ``img_shape``
                (the image inside the padded canvas) locates the padding. A sample without one
                is taken to fill the canvas. Defaults to None.
        """
        x = inputs.float()
        if self.renormalize:
            if self.reverse_channels:
                x = x[:, self.perm]
            x = torch.addcmul(self.shift, x, self.scale)  # a new tensor
        elif self.refill_padding and x is inputs:
            x = x.clone()  # the padding is re-filled in place: keep the student's batch intact
        if self.refill_padding and data_samples is not None:
            self._refill_padding(x, data_samples)
        if self.pad_divisor > 1:
            height, width = x.shape[-2:]
            pad_h = -height % self.pad_divisor
            pad_w = -width % self.pad_divisor
            if pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h), value=self.pad_value)
        return x

    def _refill_padding(self, x: torch.Tensor, data_samples: Sequence) -> None:
        height, width = x.shape[-2:]
        for i, sample in enumerate(data_samples):
            shape = sample.metainfo.get('img_shape') if hasattr(sample, 'metainfo') else None
            if shape is None:
                continue
            # The preprocessors pad at the bottom and the right.
            h, w = int(shape[0]), int(shape[1])
            if h < height:
                x[i, :, h:, :] = self.pad_value
            if w < width:
                x[i, :, :h, w:] = self.pad_value


def build_teacher_preprocessing(student_preprocessor: nn.Module,
                                teacher_preprocessor: nn.Module) -> Optional[TeacherPreprocessing]:
    """The teacher's preprocessing from the student's batch, or None when they agree.

    Args:
        student_preprocessor (nn.Module): The student's (and distiller's) ``data_preprocessor``.
        teacher_preprocessor (nn.Module): The teacher's ``data_preprocessor``.

    Returns:
        TeacherPreprocessing | None: None when the teacher's input is the student's batch.

    Raises:
        ValueError: When the two differ and the teacher's input cannot be re-made exactly.
    """
    student = read_normalization(student_preprocessor)
    teacher = read_normalization(teacher_preprocessor)
    if student is None or teacher is None:
        if _same_unknown_preprocessors(student_preprocessor, teacher_preprocessor):
            return None
        unknown = student_preprocessor if student is None else teacher_preprocessor
        role = 'student' if student is None else 'teacher'
        raise ValueError(
            f'The teacher cannot get its own preprocessing: the {role}\'s data preprocessor '
            f'{type(unknown).__name__} is not one tat_mm can read (mmengine ImgDataPreprocessor, '
            'mmdet DetDataPreprocessor, mmseg SegDataPreProcessor, mmpretrain ClsDataPreprocessor) '
            'and the two preprocessors differ, so the teacher\'s input cannot be re-made from the '
            'student\'s batch. If the teacher was trained with the student\'s normalisation, give '
            'it the student\'s: teacher=dict(..., cfg_options=dict(data_preprocessor=<the '
            'student\'s>)).')
    preprocessing = TeacherPreprocessing(student, teacher)
    return None if preprocessing.is_identity else preprocessing
