"""Figures during training: the TaT attention and DAM's areas, through the runner's visualizer."""
from typing import Optional

import numpy as np
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

SCOPE_TASKS = {'mmpretrain': 'cls', 'mmseg': 'seg', 'mmdet': 'det'}


def figure_to_array(fig) -> np.ndarray:
    """Render a matplotlib figure to an (H, W, 3) uint8 RGB array and close it."""
    import matplotlib.pyplot as plt
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


@HOOKS.register_module()
class DistillVisualizationHook(Hook):
    """Every ``interval`` iterations, draw the TaT attention of fixed validation pixels, the
    areas DAM picks and DAFA's learnt policy, and hand the images to the runner's visualizer.

    The images go through ``runner.visualizer.add_image``, so every MMEngine backend shows them
    during training: ``LocalVisBackend`` writes PNGs under ``<work_dir>/<timestamp>/vis_data/
    vis_image/``, ``TensorboardVisBackend`` / ``WandbVisBackend`` show them with the iteration as
    the step. The validation images (the first ``num_images`` of ``val_dataloader``) and the
    pixel of each (an object pixel: a digit stroke / box centre, else the centre) stay fixed, so
    the pictures show how the attention evolves. Nothing is drawn when the model has no TaT /
    DAM loss; the figures are drawn without gradients in eval mode, then training mode is
    restored.

    Config::

        custom_hooks = [dict(type='DistillVisualizationHook', interval=100, num_images=2)]

    Args:
        interval (int): Draw every ``interval`` training iterations (and after the last).
            Defaults to 100.
        num_images (int): Validation images per figure. Defaults to 2.
        draw_attention (bool): Draw the TaT attention. Defaults to True.
        draw_dam (bool): Draw DAM's areas. Defaults to True.
        draw_dafa (bool): Draw the policy of every ``DAFADistillLoss`` (its top sub-policies,
            ``dafa_policy_<i>``). Defaults to True.
    """

    priority = 'LOW'

    def __init__(self, interval: int = 100, num_images: int = 2, draw_attention: bool = True,
                 draw_dam: bool = True, draw_dafa: bool = True):
        if interval < 1 or num_images < 1:
            raise ValueError('DistillVisualizationHook: interval and num_images must be >= 1, got '
                             f'{interval}, {num_images}')
        self.interval = interval
        self.num_images = num_images
        self.draw_attention = draw_attention
        self.draw_dam = draw_dam
        self.draw_dafa = draw_dafa
        self._samples = None
        self._images = None

    def _task(self, model) -> Optional[str]:
        return SCOPE_TASKS.get(getattr(model, 'scope', None))

    def _val_batch(self, runner):
        if self._samples is None:
            import mmcv
            dataset = runner.val_dataloader.dataset
            indices = list(range(min(self.num_images, len(dataset))))
            self._samples = [dataset[i] for i in indices]
            images = []
            for i in indices:
                info = dataset.get_data_info(i)
                images.append(np.asarray(info['img']) if 'img' in info else
                              mmcv.imread(info['img_path'], channel_order='rgb'))
            self._images = images
        return self._samples, self._images

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not (self.every_n_train_iters(runner, self.interval) or self.is_last_train_iter(runner)):
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        task = self._task(model)
        if task is None or not hasattr(model, 'pairs'):
            return
        from .distill_figures import attention_figure, dam_figure
        samples, images = self._val_batch(runner)
        was_training = model.training
        model.eval()
        try:
            drawers = [('tat_attention', attention_figure, self.draw_attention),
                       ('dam_areas', dam_figure, self.draw_dam)]
            for name, draw, enabled in drawers:
                if not enabled:
                    continue
                fig = draw(model, task, samples, images)
                if fig is not None:
                    runner.visualizer.add_image(name, figure_to_array(fig), step=runner.iter + 1)
            if self.draw_dafa:
                self._draw_policies(runner, model)
        finally:
            model.train(was_training)

    @staticmethod
    def _draw_policies(runner, model) -> None:
        from ..distill.dafa_step import find_dafa_losses
        from .dafa_policy import draw_dafa_policy
        for i, loss in enumerate(find_dafa_losses(model)):
            fig = draw_dafa_policy(loss.search)
            runner.visualizer.add_image(f'dafa_policy_{i}', figure_to_array(fig),
                                        step=runner.iter + 1)
