"""Score a distiller's teacher with the student's val dataloader and evaluator, and say whether
it is at chance level (untrained, or loaded wrongly)."""
import random
from contextlib import contextmanager
from typing import Dict, Iterable, NamedTuple, Optional

import numpy as np
import torch
import torch.nn as nn
from mmengine.dist import all_reduce


class ChanceLevel(NamedTuple):
    """The score an uninformed model gets on one metric.

    Attributes:
        metric (str): The metric's key (``'accuracy/top1'``, ``'mIoU'``, ``'coco/bbox_mAP'``).
        value (float): The chance score, in the metric's own unit.
        meaning (str): How it is defined, for messages.
    """
    metric: str
    value: float
    meaning: str


@contextmanager
def random_states_kept():
    """Restore torch's (CPU and current CUDA device), numpy's and Python's random states after
    the block: iterating a dataloader draws a seed, and the run must draw what it would have."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@torch.no_grad()
def evaluate_teacher(distiller: nn.Module, dataloader: Iterable, evaluator,
                     max_batches: Optional[int] = None) -> tuple:
    """Run the teacher on validation batches as the distiller feeds it, and score it.

    Each batch goes through the student's data preprocessor and the teacher's re-made
    normalisation (``distiller.teacher_preprocessing``), in the teacher's dtype, exactly as in
    training, then through the teacher's ``predict``; ``evaluator`` (the student's val evaluator)
    scores the predictions. Random states are left as they were. Under DDP every rank runs its
    part of the dataloader (all ranks must call this).

    Args:
        distiller (nn.Module): A :class:`~tat_mm.distill.BaseDistiller`, unwrapped.
        dataloader (Iterable): The student's val dataloader.
        evaluator (mmengine.evaluator.Evaluator): The student's val evaluator.
        max_batches (int, optional): Stop after this many batches (per rank). Defaults to None
            (the whole dataloader).

    Returns:
        tuple: ``(metrics, num_samples, label_counts)``: the evaluator's metrics dict, the
        samples scored (all ranks), and for segmentation the ground-truth pixels per class
        (a tensor, all ranks), else None.
    """
    teacher = distiller.teacher
    dtype = next(teacher.parameters()).dtype
    ignore_index = next((m.ignore_index for m in getattr(evaluator, 'metrics', [])
                         if hasattr(m, 'ignore_index')), 255)
    num_classes = len((getattr(evaluator, 'dataset_meta', None) or {}).get('classes') or ())
    num_samples, label_counts = 0, None
    with random_states_kept(), _whole_teacher(distiller.teacher_taps):
        for index, data_batch in enumerate(dataloader):
            if max_batches is not None and index >= max_batches:
                break
            data = distiller.data_preprocessor(data_batch, False)
            inputs, data_samples = data['inputs'], data['data_samples']
            if distiller.teacher_preprocessing is not None:
                inputs = distiller.teacher_preprocessing(inputs, data_samples)
            if inputs.is_floating_point() and inputs.dtype != dtype:
                inputs = inputs.to(dtype)
            outputs = teacher(inputs, data_samples, mode='predict')
            evaluator.process(data_samples=outputs, data_batch=data_batch)
            num_samples += len(outputs)
            if num_classes:
                label_counts = _count_labels(outputs, label_counts, num_classes, ignore_index)
    total = torch.tensor(num_samples, dtype=torch.long)
    all_reduce(total)
    has_labels = torch.tensor(int(label_counts is not None))
    all_reduce(has_labels, op='min')
    if has_labels.item():
        all_reduce(label_counts)
    else:
        label_counts = None
    return evaluator.evaluate(int(total.item())), int(total.item()), label_counts


@contextmanager
def _whole_teacher(taps):
    """Let the teacher run to its head: its taps (a ``TapGroup``) must not stop the forward
    pass once they have recorded, as they do in training."""
    stop_when_complete, taps.stop_when_complete = taps.stop_when_complete, False
    try:
        yield
    finally:
        taps.stop_when_complete = stop_when_complete
        taps.clear()


def _count_labels(outputs, counts: Optional[torch.Tensor], num_classes: int,
                  ignore_index: int) -> Optional[torch.Tensor]:
    """Add the ground-truth pixels per class of segmentation samples to ``counts``; None for
    samples without a semantic segmentation."""
    for sample in outputs:
        gt = getattr(sample, 'gt_sem_seg', None)
        if gt is None:
            return None
        labels = gt.data.flatten().long().cpu()
        labels = labels[(labels != ignore_index) & (labels >= 0) & (labels < num_classes)]
        counts = (torch.zeros(num_classes, dtype=torch.long) if counts is None else counts) \
            + torch.bincount(labels, minlength=num_classes)
    return counts


def chance_level(metrics: Dict[str, float], num_classes: Optional[int],
                 label_counts: Optional[torch.Tensor]) -> Optional[ChanceLevel]:
    """The chance level of the first metric in ``metrics`` that has a known one.

    * classification top-1 (``.../accuracy/top1``, in %): 1.5 / num_classes (1.5 x guessing);
    * segmentation ``mIoU`` (in %): the mIoU of predicting the most frequent ground-truth class
      everywhere, ``100 * max_c(pixels_c / pixels) / classes present``;
    * detection ``.../bbox_mAP``, ``.../segm_mAP``, ``pascal_voc/mAP`` (0-1): 0.001.

    Args:
        metrics (Dict[str, float]): An evaluator's metrics.
        num_classes (int, optional): Classes of the task (for top-1).
        label_counts (torch.Tensor, optional): Ground-truth pixels per class (for mIoU).

    Returns:
        ChanceLevel | None: None when no metric has a known chance level.
    """
    for key in metrics:
        if key.endswith('accuracy/top1') and num_classes:
            return ChanceLevel(key, 150.0 / num_classes, f'1.5 / {num_classes} classes')
        if (key == 'mIoU' or key.endswith('/mIoU')) and label_counts is not None \
                and label_counts.sum() > 0:
            fraction = float(label_counts.max()) / float(label_counts.sum())
            present = int((label_counts > 0).sum())
            return ChanceLevel(key, 100.0 * fraction / present,
                               f'predicting class {int(label_counts.argmax())} (the most frequent, '
                               f'{fraction:.1%} of the pixels) everywhere, {present} classes '
                               'present')
        if key.endswith(('bbox_mAP', 'segm_mAP', 'pascal_voc/mAP')):
            return ChanceLevel(key, 0.001, 'no correct detection')
    return None
