"""SoKD's DAFA search space: learnable augmentation policies for a teacher feature.

A policy is a list of *sub-policies*, each a short sequence of operations (by default every
unordered pair of distinct operations of :data:`~.feature_augment_ops.OPERATIONS`, applied in
order). The learnable search parameters, with the public SoKD code's initial values:

* ``probabilities`` (n, K): the chance each operation of each sub-policy is applied (0.5);
* ``magnitudes`` (n, K): each operation's strength in [0, 1], mapped linearly onto the
  operation's range (0.5);
* ``selection_logits`` (n,): which sub-policy is used, softmax over sub-policies (1e-3, uniform);
* ``control_variate``: RELAX's learned control variate c, an MLP (one hidden layer of 100 tanh
  units) over all relaxed samples, trained to minimise the variance of the gradient estimate.

Per step one sample is drawn (:meth:`FeatureAugmentSearch.sample`): a sub-policy k by Gumbel-max
over the selection logits and, for each of its operations, apply-or-not by a Bernoulli whose
relaxation (temperature 0.5) feeds the control variate; the forward pass uses the hard samples.
The sample (its uniforms and the seed of the operations' random parts) is kept until the next
one, so the bi-level step can evaluate the same augmentation at several student weights.

Gradients: magnitudes get the real gradient through the operations (straight-through for the
channel-drop relaxation); probabilities and selection logits get the RELAX estimate
(:meth:`FeatureAugmentSearch.relax_gradients`) of the gradient of a scalar objective f(b) of the
discrete choices b.

Choices that differ from the public code (written down in README, "DAFA"):

* A magnitude maps onto ``[0, max]`` with a random sign per image for the geometric operations,
  instead of onto ``[-max, max]`` with a random mirror: the same set of transforms, but magnitude 0
  is the identity and the magnitude reads as a strength (the public mapping makes m and 1 - m the
  same distribution and m = 0.5 the identity).
* The categorical log-probability is counted once (the public code broadcasts it over the n x K
  Bernoulli terms, scaling its gradient by n K).
* Probabilities are kept in [1e-3, 1 - 1e-3] after each update (not [0, 1]) so that an operation
  can never get stuck at a probability whose gradient is zero.
"""
import itertools
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor

from .feature_augment_ops import OPERATIONS, apply_operation, check_operation

EPS = 1e-6
PROBABILITY_MARGIN = 1e-3


class PolicySample(NamedTuple):
    """One draw of the policy: which sub-policy, which of its operations, and the randomness."""
    index: int            # the selected sub-policy k
    apply: Tensor         # (n, K) hard Bernoulli samples (only row k acts)
    u_apply: Tensor       # (n, K) uniforms behind ``apply``
    v_apply: Tensor       # (n, K) uniforms of RELAX's conditional sample
    u_select: Tensor      # (n,) uniforms behind the Gumbel-max selection
    v_select: Tensor      # (n,) uniforms of the conditional selection sample
    op_seed: int          # seed of the operations' random parts (sign, centre, noise, ...)


def _mix_seed(*values: int) -> int:
    """A 62-bit seed from integers (deterministic, spreads consecutive steps apart)."""
    seed = 0x5DEECE66D
    for value in values:
        seed = (seed * 6364136223846793005 + int(value) + 1442695040888963407) % (1 << 62)
    return seed


@MODELS.register_module()
class FeatureAugmentSearch(nn.Module):
    """DAFA's learnable augmentation policy for one teacher feature.

    Args:
        search_iters (int): Number of training iterations (from the start) during which the
            policy is searched by the bi-level step; afterwards it is frozen and only sampled.
            0 keeps the initial policy (random augmentation, an ablation).
        search_interval (int): Search on every ``search_interval``-th iteration of the search
            phase (1 = every iteration, as the public code); the other iterations are normal
            steps with the current policy. Defaults to 1.
        operations (Sequence[str], optional): Operations to combine into sub-policies (every
            unordered pair of distinct ones). Defaults to None (all of :data:`OPERATIONS`).
        sub_policies (Sequence[Sequence[str]], optional): Explicit sub-policies, all of the same
            length, instead of the pairs of ``operations``. Defaults to None.
        magnitude_ranges (dict, optional): ``{operation: (low, high)}`` strength ranges
            overriding the defaults; must lie in the operation's allowed range. Defaults to None.
        init_probability (float): Initial application probability. Defaults to 0.5.
        init_magnitude (float): Initial magnitude in [0, 1]. Defaults to 0.5.
        init_selection_logit (float): Initial selection logit. Defaults to 1e-3.
        temperature (float): Temperature of the relaxed samples. Defaults to 0.5.
        virtual_lr (float, optional): Step size of the bi-level step's virtual SGD step; None
            uses the student optimizer's current learning rate (DARTS). Defaults to 0.01 (the
            public SoKD code).
        fd_radius (float): Finite-difference radius r of the implicit gradient, epsilon =
            r / ||v||. Defaults to 0.01.
        cv_hidden (int): Hidden units of the control variate. Defaults to 100.
        seed (int, optional): Seed of the per-step samples; each step's sample depends only on
            (seed, step), so resumed runs draw what an uninterrupted run draws. Defaults to None
            (drawn from torch's global generator at construction, i.e. from the runner's seed).
    """

    def __init__(self,
                 search_iters: int,
                 search_interval: int = 1,
                 operations: Optional[Sequence[str]] = None,
                 sub_policies: Optional[Sequence[Sequence[str]]] = None,
                 magnitude_ranges: Optional[Dict[str, Tuple[float, float]]] = None,
                 init_probability: float = 0.5,
                 init_magnitude: float = 0.5,
                 init_selection_logit: float = 1e-3,
                 temperature: float = 0.5,
                 virtual_lr: Optional[float] = 0.01,
                 fd_radius: float = 0.01,
                 cv_hidden: int = 100,
                 seed: Optional[int] = None) -> None:
        super().__init__()
        if not isinstance(search_iters, int) or isinstance(search_iters, bool) or search_iters < 0:
            raise ValueError(f'search_iters must be an integer >= 0 (iterations of the search '
                             f'phase), got {search_iters!r}')
        if not isinstance(search_interval, int) or search_interval < 1:
            raise ValueError(f'search_interval must be an integer >= 1, got {search_interval!r}')
        for name, value in (('init_probability', init_probability),
                            ('init_magnitude', init_magnitude)):
            if not 0 <= value <= 1:
                raise ValueError(f'{name} must be in [0, 1], got {value}')
        if temperature <= 0 or fd_radius <= 0 or (virtual_lr is not None and virtual_lr <= 0):
            raise ValueError('temperature, fd_radius and virtual_lr must be positive, got '
                             f'{temperature}, {fd_radius}, {virtual_lr}')
        self.sub_policies = self._build_sub_policies(operations, sub_policies)
        self.strength_ranges = self._build_ranges(magnitude_ranges)
        n, k = len(self.sub_policies), len(self.sub_policies[0])

        self.search_iters = search_iters
        self.search_interval = search_interval
        self.temperature = temperature
        self.virtual_lr = virtual_lr
        self.fd_radius = fd_radius

        self.probabilities = nn.Parameter(torch.full((n, k), float(init_probability)))
        self.magnitudes = nn.Parameter(torch.full((n, k), float(init_magnitude)))
        self.selection_logits = nn.Parameter(torch.full((n, ), float(init_selection_logit)))
        self.control_variate = nn.Sequential(
            nn.Linear(n * (k + 1), cv_hidden), nn.Tanh(), nn.Linear(cv_hidden, 1))
        # Iterations trained so far (saved, so a resumed run knows where the search stands).
        self.register_buffer('num_steps', torch.zeros((), dtype=torch.long))
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        self.register_buffer('seed', torch.tensor(int(seed), dtype=torch.long))

        # Set by the bi-level step (tat_mm/distill/dafa_step.py).
        self.current: Optional[PolicySample] = None
        self.augment = True            # False: the un-augmented pass of the virtual student
        self.magnitude_grad = False    # True: keep the graph to the magnitudes (search passes)
        self._checked_sizes = set()

    # ----------------------------------------------------------------- construction
    @staticmethod
    def _build_sub_policies(operations, sub_policies) -> List[Tuple[str, ...]]:
        if sub_policies is not None:
            if operations is not None:
                raise ValueError('Give either `operations` (all pairs are used) or '
                                 '`sub_policies`, not both.')
            policies = [tuple(p) for p in sub_policies]
            if not policies or len({len(p) for p in policies}) != 1 or not policies[0]:
                raise ValueError(f'sub_policies must be a non-empty list of operation lists of '
                                 f'one common length, got {sub_policies!r}')
        else:
            operations = list(OPERATIONS) if operations is None else list(operations)
            if len(set(operations)) < 2:
                raise ValueError(f'`operations` needs at least two distinct operations to form '
                                 f'pairs, got {operations!r}')
            policies = list(itertools.combinations(dict.fromkeys(operations), 2))
        for policy in policies:
            for name in policy:
                check_operation(name)
        return policies

    def _build_ranges(self, magnitude_ranges) -> Dict[str, Tuple[float, float]]:
        used = {name for policy in self.sub_policies for name in policy}
        ranges = {name: OPERATIONS[name].default_range for name in used}
        for name, value in (magnitude_ranges or {}).items():
            op = check_operation(name)
            if not op.has_magnitude:
                raise ValueError(f'{name} has no magnitude; remove it from magnitude_ranges.')
            low, high = (float(v) for v in value)
            allowed = op.allowed_range
            if not allowed[0] <= low <= high <= allowed[1]:
                raise ValueError(f'magnitude_ranges[{name!r}] = {tuple(value)} is out of range: '
                                 f'{name} takes low <= high within {allowed} ({op.unit}).')
            if name in ranges:
                ranges[name] = (low, high)
        return ranges

    # ----------------------------------------------------------------- schedule
    @property
    def step(self) -> int:
        """int: Training iterations done so far."""
        return int(self.num_steps.item())

    def search_due(self, step: Optional[int] = None) -> bool:
        """Whether iteration ``step`` (default: the current one) runs the bi-level search."""
        step = self.step if step is None else step
        return step < self.search_iters and step % self.search_interval == 0

    # ----------------------------------------------------------------- sampling
    def sample(self, step: Optional[int] = None) -> PolicySample:
        """Draw the sub-policy and its random parts for one training step.

        Args:
            step (int, optional): Iteration; the draw depends only on (seed, step). None draws
                from torch's global generator instead.

        Returns:
            PolicySample: Also kept in :attr:`current`.
        """
        n, k = self.probabilities.shape
        if step is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        else:
            seed = _mix_seed(int(self.seed.item()), step)
        gen = torch.Generator().manual_seed(seed)
        uniforms = torch.rand(2 * n * k + 2 * n, generator=gen).clamp(EPS, 1 - EPS)
        u_apply, v_apply = uniforms[:2 * n * k].view(2, n, k)
        u_select, v_select = uniforms[2 * n * k:].view(2, n)
        op_seed = int(torch.randint(0, 2**62, (), generator=gen).item())
        device = self.probabilities.device
        with torch.no_grad():
            z_apply = self._apply_logits() + torch.logit(u_apply.to(device))
            log_theta = F.log_softmax(self.selection_logits.float(), dim=0)
            z_select = log_theta - torch.log(-torch.log(u_select.to(device)))
        self.current = PolicySample(
            index=int(z_select.argmax().item()), apply=(z_apply > 0).float(),
            u_apply=u_apply.to(device), v_apply=v_apply.to(device),
            u_select=u_select.to(device), v_select=v_select.to(device), op_seed=op_seed)
        return self.current

    def _apply_logits(self) -> Tensor:
        p = self.probabilities.float().clamp(EPS, 1 - EPS)
        return torch.log(p) - torch.log1p(-p)

    def strength(self, policy: int, position: int, magnitude: Tensor) -> Tensor:
        """The operation's strength for a magnitude in [0, 1] (linear map onto its range)."""
        low, high = self.strength_ranges[self.sub_policies[policy][position]]
        return low + magnitude * (high - low)

    # ----------------------------------------------------------------- applying
    def check_feature(self, x: Tensor) -> None:
        """Errors for features the policy cannot augment (checked once per feature size)."""
        size = tuple(x.shape[-2:])
        if size in self._checked_sizes:
            return
        if x.dim() != 4:
            raise ValueError(f'DAFA augments (B, C, H, W) features, got {tuple(x.shape)}')
        if 'Cutout' in self.strength_ranges:
            largest = self.strength_ranges['Cutout'][1] * min(size)
            if largest < 1:
                raise ValueError(
                    f'DAFA Cutout on a {size[0]}x{size[1]} feature map: its largest square '
                    f'({self.strength_ranges["Cutout"][1]} x {min(size)} = {largest:.2f} px) is '
                    'smaller than one feature pixel, so the map is too small for the cutout. Tap a '
                    'larger map, drop Cutout from `operations`, or widen its range with '
                    'magnitude_ranges=dict(Cutout=(0, x)) where x * min(H, W) >= 1.')
        self._checked_sizes.add(size)

    def forward(self, x: Tensor) -> Tensor:
        """Augment a (B, C, H, W) teacher feature with the current sample.

        Identity in eval mode and while :attr:`augment` is False. Without a current sample (a
        direct loss call outside the distiller's ``train_step``) a one-off sample is drawn.
        """
        self.check_feature(x)
        if not (self.training and self.augment):
            return x
        sample = self.current
        if sample is None:
            sample = self.sample()
            self.current = None
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        k = sample.index
        for j, name in enumerate(self.sub_policies[k]):
            if not bool(sample.apply[k, j]):
                continue
            magnitude = self.magnitudes[k, j]
            if not self.magnitude_grad:
                magnitude = magnitude.detach()
            # One generator per operation and call: the same sample gives the same augmentation
            # in every pass of the step; each rank augments its own images differently.
            gen = torch.Generator(device=x.device).manual_seed(
                _mix_seed(sample.op_seed, rank, j))
            x = apply_operation(name, x, self.strength(k, j, magnitude.to(x.dtype)), gen)
        return x

    # ----------------------------------------------------------------- RELAX
    def _relaxed_inputs(self, sample: PolicySample) -> Tuple[Tensor, Tensor, Tensor]:
        """Relaxed samples z, conditional samples z~ (control-variate inputs) and log p(b)."""
        logits = self._apply_logits()
        b = sample.apply
        z_apply = logits + torch.logit(sample.u_apply)
        theta = torch.sigmoid(logits)
        v = sample.v_apply
        v_cond = v * (b - 1) * (theta - 1) + b * (v * theta + 1 - theta)  # u | b (RELAX)
        z_apply_cond = logits + torch.logit(v_cond.clamp(EPS, 1 - EPS))

        log_theta = F.log_softmax(self.selection_logits.float(), dim=0)
        z_select = log_theta - torch.log(-torch.log(sample.u_select))
        k = sample.index
        v_sel = sample.v_select
        z_select_cond = -torch.log(-torch.log(v_sel) / log_theta.exp() - torch.log(v_sel[k]))
        z_select_cond = torch.where(
            torch.arange(len(v_sel), device=v_sel.device) == k, -torch.log(-torch.log(v_sel[k])),
            z_select_cond)

        t = self.temperature
        relaxed = torch.cat([torch.sigmoid(z_apply / t).flatten(), F.softmax(z_select / t, 0)])
        relaxed_cond = torch.cat(
            [torch.sigmoid(z_apply_cond / t).flatten(), F.softmax(z_select_cond / t, 0)])
        log_prob = (b * F.logsigmoid(logits) + (1 - b) * F.logsigmoid(-logits)).sum() \
            + log_theta[k]
        return relaxed, relaxed_cond, log_prob

    def control(self, relaxed: Tensor) -> Tensor:
        """The control variate c(z) (a scalar)."""
        relaxed = relaxed.to(self.control_variate[0].weight.dtype)
        return self.control_variate(2 * relaxed - 1).squeeze(-1)

    def relax_gradients(self, f_value: Tensor) -> Dict[str, Tensor]:
        """RELAX estimate of d E_b[f(b)] / d(probabilities, selection_logits) at :attr:`current`.

        ``g = (f(b) - c(z~)) d log p(b) + d c(z) - d c(z~)``; the control variate's gradient is
        that of the estimator's variance, ``d mean(g^2) / d phi``.

        Args:
            f_value (Tensor): f at the current sample (a scalar, no graph needed).

        Returns:
            dict: ``probabilities``, ``selection_logits`` and ``control_variate.<name>``
            gradients (detached), plus ``variance`` (mean g^2, for the log).
        """
        if self.current is None:
            raise RuntimeError('relax_gradients needs a sample: call sample() first')
        params = [self.probabilities, self.selection_logits]
        with torch.enable_grad():
            relaxed, relaxed_cond, log_prob = self._relaxed_inputs(self.current)
            c_z, c_cond = self.control(relaxed), self.control(relaxed_cond)
            d_log_prob = torch.autograd.grad(log_prob, params, retain_graph=True)
            d_c_z = torch.autograd.grad(c_z, params, create_graph=True)
            d_c_cond = torch.autograd.grad(c_cond, params, create_graph=True)
            f_value = f_value.detach().to(self.probabilities.dtype).reshape(())
            grads = [(f_value - c_cond) * dl + dz - dc
                     for dl, dz, dc in zip(d_log_prob, d_c_z, d_c_cond)]
            variance = torch.cat([g.flatten() for g in grads]).pow(2).mean()
            d_phi = torch.autograd.grad(variance, list(self.control_variate.parameters()))
        out = dict(probabilities=grads[0].detach(), selection_logits=grads[1].detach(),
                   variance=variance.detach())
        for (name, _), g in zip(self.control_variate.named_parameters(), d_phi):
            out[f'control_variate.{name}'] = g.detach()
        return out

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep probabilities in [1e-3, 1 - 1e-3] and magnitudes in [0, 1] after an update."""
        self.probabilities.clamp_(PROBABILITY_MARGIN, 1 - PROBABILITY_MARGIN)
        self.magnitudes.clamp_(0, 1)

    # ----------------------------------------------------------------- reading the policy
    @torch.no_grad()
    def top_sub_policies(self, top_k: int = 5) -> List[dict]:
        """The ``top_k`` most likely sub-policies, most likely first.

        Returns:
            list[dict]: ``dict(index, weight, ops=[dict(name, probability, magnitude, strength,
            unit)])``; ``weight`` is the selection probability.
        """
        weights = F.softmax(self.selection_logits.float(), dim=0)
        order = torch.argsort(weights, descending=True)[:top_k]
        rows = []
        for i in order.tolist():
            ops = []
            for j, name in enumerate(self.sub_policies[i]):
                op = OPERATIONS[name]
                m = float(self.magnitudes[i, j])
                ops.append(dict(name=name, probability=float(self.probabilities[i, j]),
                                magnitude=m if op.has_magnitude else None,
                                strength=float(self.strength(i, j, torch.tensor(m)))
                                if op.has_magnitude else None, unit=op.unit))
            rows.append(dict(index=i, weight=float(weights[i]), ops=ops))
        return rows

    def format_policy(self, top_k: int = 5) -> str:
        """The top sub-policies as text, one per line, for the log."""
        lines = []
        for rank, row in enumerate(self.top_sub_policies(top_k), 1):
            ops = []
            for op in row['ops']:
                text = f"{op['name']}(p={op['probability']:.2f}"
                if op['magnitude'] is not None:
                    text += f", m={op['magnitude']:.2f} -> {op['strength']:.3g} {op['unit']}"
                ops.append(text + ')')
            lines.append(f"  {rank}. weight {row['weight']:.3f}: " + ' -> '.join(ops))
        n = len(self.sub_policies)
        return (f'top {min(top_k, n)} of {n} sub-policies (uniform weight {1 / n:.3f}):\n'
                + '\n'.join(lines))
