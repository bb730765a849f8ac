"""The report's reviewer section: sanity-check curves and verdicts (``results["sanity"]``) and the
counterfactual realism / minimality table (``results["realism"]``), both computed by
:mod:`medxgan.evaluate.review`; this module only draws them. Empty when neither is present."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from medxgan.evaluate.sanity import prior_note
from medxgan.evaluate.tables import format_number
from medxgan.report.markup import esc

__all__ = ["review_html", "sanity_plot"]


_f = format_number


def sanity_plot(sanity: Mapping[str, Any], path: Path) -> Path | None:
    """SSIM and Spearman of |A| (mean, 95 % interval band) per randomised block, one line per method."""
    methods = sanity.get("methods") or {}
    if not methods:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = sanity.get("blocks") or []
    xs = list(range(len(blocks) + 1))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for ax, key, title in ((axes[0], "ssim", "SSIM of |A|"), (axes[1], "spearman", "Spearman of |A|")):
        for m, r in methods.items():
            curve = r.get("curve") or []
            mean = [1.0] + [(c.get(key) or {}).get("mean") for c in curve]
            lo = [1.0] + [(c.get(key) or {}).get("lo") for c in curve]
            hi = [1.0] + [(c.get(key) or {}).get("hi") for c in curve]
            f = lambda v: float("nan") if v is None else float(v)  # noqa: E731
            line, = ax.plot(xs[: len(mean)], [f(v) for v in mean], marker="o", label=f"{m} ({r.get('verdict')})")
            ax.fill_between(xs[: len(mean)], [f(v) for v in lo], [f(v) for v in hi], alpha=0.15, color=line.get_color())
        ax.axhline(float(sanity.get("threshold", 0.5)), color="grey", ls="--", lw=1)
        ax.set_xticks(xs, ["trained"] + [f"+{b}" for b in blocks], rotation=30, fontsize=8)
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(title + " vs the trained model", fontsize=10)
    axes[1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def review_html(results: Mapping[str, Any], img_dir: Path, rel: str) -> str:
    """The HTML of the section (``<h2 id='sanity'>`` ...), "" when there is nothing to show."""
    sanity, realism = results.get("sanity"), results.get("realism")
    if not sanity and not (realism and realism.get("rows")):
        return ""
    h = ["<h2 id='sanity'>Sanity checks and counterfactual realism</h2>"]
    if sanity and sanity.get("methods"):
        h.append(f"<p>Cascading model-parameter randomisation (Adebayo et al. 2018): the classifier's blocks "
                 f"({esc(', '.join(sanity.get('blocks') or []))}) are re-initialised from the top, one more per step, on "
                 f"{esc(sanity.get('n_images'))} images; a method passes when SSIM and Spearman of |A| against the trained "
                 f"model's map fall below {esc(sanity.get('threshold', 0.5))} (95 % interval too) once the top "
                 f"{esc(sanity.get('verdict_blocks', 2))} block(s) are randomised. A map that stays the same explains the image, "
                 f"not the classifier.</p>")
        p = sanity_plot(sanity, img_dir / "sanity.png")
        if p is not None:
            h.append(f"<div><img class='plot' src='{rel}/sanity.png' alt='sanity-check curves'></div>")
        h.append("<table class='metrics'><thead><tr><th>Method</th><th>Verdict</th><th>Why</th></tr></thead><tbody>")
        for m, r in sanity["methods"].items():
            h.append(f"<tr><td><code>{esc(m)}</code></td><td><b>{esc(r.get('verdict'))}</b></td><td>{esc(r.get('reason'))}</td></tr>")
        h.append("</tbody></table>")
        if sanity.get("skipped"):
            h.append(f"<p class='muted'>Not applicable (no classifier at explanation time): {esc(', '.join(sanity['skipped']))}; "
                     "see the data-randomisation benchmark (benchmarks/sanity/).</p>")
        note = prior_note(dict(sanity))
        if note:  # why a medXGAN map can survive this check (issue 31)
            h.append(f"<p class='muted'>{esc(note)}</p>")
    if realism and realism.get("rows"):
        h.append(f"<p>Counterfactual realism: Fréchet distance and KID against {esc(realism.get('n_reference'))} real negatives in the "
                 f"{esc(realism.get('feature_space'))}, a domain feature space, not Inception (compare the rows, not with published FIDs); "
                 f"n = {esc(realism.get('n'))} per row. Minimality: means over the images (intervals in results.md); changed = "
                 f"|x - x_cf| &gt; {esc(realism.get('threshold', 0.1))}.</p>")
        h.append("<table class='metrics'><thead><tr><th>Compared set</th><th>Role</th><th>FD</th><th>KID</th>"
                 "<th>Mean |change|</th><th>Changed</th><th>Regions</th></tr></thead><tbody>")
        for r in realism["rows"]:
            mn = r.get("minimality") or {}
            h.append(f"<tr><td>{esc(r.get('label'))}</td><td>{esc(r.get('role'))}</td><td>{_f(r.get('fd'))}</td><td>{_f(r.get('kid'), 4)}</td>"
                     f"<td>{_f((mn.get('mean_abs_change') or {}).get('mean'))}</td><td>{_f((mn.get('frac_changed') or {}).get('mean'))}</td>"
                     f"<td>{_f((mn.get('regions') or {}).get('mean'), 1)}</td></tr>")
        h.append("</tbody></table>")
    return "".join(h)
