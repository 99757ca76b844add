"""What the CIFAR backbones share: ``out_indices`` checking and the CRD initialisation."""
from typing import List, Sequence, Tuple


def check_out_indices(out_indices: Sequence[int], num_stages: int, owner: str) -> Tuple[int, ...]:
    """Normalise ``out_indices`` (negative values count from the end) and check their range."""
    if isinstance(out_indices, int):
        out_indices = (out_indices, )
    result = []
    for index in out_indices:
        if not -num_stages <= index < num_stages:
            raise ValueError(f'{owner}: out_indices {tuple(out_indices)} out of range for '
                             f'{num_stages} stages')
        result.append(index % num_stages)
    return tuple(result)


def default_init_cfg() -> List[dict]:
    """Kaiming-normal (fan_out, ReLU) convs and unit-scale norms, as the CRD models initialise."""
    return [
        dict(type='Kaiming', layer=['Conv2d'], mode='fan_out', nonlinearity='relu',
             distribution='normal'),
        dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm']),
    ]
