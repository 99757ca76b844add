"""A figure of DAFA's learnt augmentation policy: the top sub-policies and their parameters."""
from typing import Optional

from ..modules.feature_augment_search import FeatureAugmentSearch


def draw_dafa_policy(search: FeatureAugmentSearch, top_k: int = 8, title: Optional[str] = None,
                     ax=None):
    """Horizontal bars of the ``top_k`` most likely sub-policies.

    Each bar is a sub-policy's selection probability (the dashed line is the uniform initial
    value); its label lists the operations in order with their application probability p and
    magnitude m (-> strength in the operation's unit).

    Args:
        search (FeatureAugmentSearch): The search module, e.g.
            ``distiller.pairs[0].losses[0].search``.
        top_k (int): Number of sub-policies shown. Defaults to 8.
        title (str, optional): Axes title. Defaults to None ('DAFA policy after N iterations').
        ax (matplotlib.axes.Axes, optional): Axes to draw into. Defaults to None (a new figure).

    Returns:
        matplotlib.figure.Figure: The figure (save it with ``fig.savefig(path)``).
    """
    import matplotlib
    if ax is None:
        matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt

    rows = search.top_sub_policies(top_k)
    if ax is None:
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    else:
        fig = ax.figure
    labels = []
    for row in rows:
        parts = []
        for op in row['ops']:
            text = f"{op['name']} p={op['probability']:.2f}"
            if op['magnitude'] is not None:
                text += f" m={op['magnitude']:.2f} ({op['strength']:.3g} {op['unit']})"
            parts.append(text)
        labels.append(' -> '.join(parts))
    weights = [row['weight'] for row in rows]
    positions = list(range(len(rows)))[::-1]  # most likely on top
    ax.barh(positions, weights, color='tab:blue')
    ax.axvline(1 / len(search.sub_policies), color='grey', linestyle='--', linewidth=1,
               label='uniform (initial)')
    ax.set_yticks(positions)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel('selection probability')
    ax.legend(loc='lower right', fontsize=8)
    ax.set_title(title or f'DAFA policy after {search.step} iterations '
                 f'(top {len(rows)} of {len(search.sub_policies)} sub-policies)', fontsize=10)
    fig.tight_layout()
    return fig
