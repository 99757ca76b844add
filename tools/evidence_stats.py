"""The statistic of every evidence protocol: the paired 95 % t-interval over seeds."""
import use_venv  # noqa: F401,I001  (first: the venv's Python if needed)
import numpy as np

# Two-sided 97.5 % quantiles of Student's t (95 % intervals over n seeds: df = n - 1).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def paired_interval(diffs) -> tuple:
    """Mean of paired differences with its 95 % t-interval over seeds (nan bounds below 2)."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2:
        return float(d.mean()) if len(d) else float('nan'), float('nan'), float('nan')
    half = T_975[len(d) - 1] * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)
