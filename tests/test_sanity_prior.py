"""The sanity check records how much of the explained set the randomised classifier still calls positive, and says why
a medXGAN map can survive the fixed-generator form (issue 31)."""

from __future__ import annotations


def test_sanity_records_the_share_still_called_positive_and_says_why_medxgan_maps_survive():
    import torch
    from torch import nn

    from medxgan.classifiers import wrap_classifier
    from medxgan.evaluate.sanity import model_randomisation, prior_note
    from medxgan.explain.baselines import SaliencyExplainer

    net = nn.Sequential(nn.Flatten(), nn.Linear(256, 4), nn.Tanh(), nn.Linear(4, 1))
    with torch.no_grad():  # trained: every scan positive (logit 5 + a little); the head re-initialised: bias ~0
        net[3].weight.fill_(0.01)
        net[3].bias.fill_(5.0)
    clf = wrap_classifier(net, output="logit1")
    x = torch.rand(6, 1, 16, 16) * 2 - 1
    res = model_randomisation([SaliencyExplainer(clf)], clf, x, n_resamples=20)
    shares = {r["k"]: r["share"] for r in res["inputs_positive"]}
    assert shares[0] == 1.0 and set(shares) == {0, 1, 2}
    with torch.no_grad():
        assert float(net[3].bias) == 5.0  # restored
    assert prior_note(res) is None  # no medXGAN method
    res["methods"]["medxgan-lig"] = {}
    res["inputs_positive"] = [{"k": 0, "share": 1.0}, {"k": 1, "share": 0.5}, {"k": 2, "share": 0.3}]
    assert prior_note(res).startswith("The classifier calls 1.00 of these scans positive, 0.30 once its top 2 block(s) are randomised")
