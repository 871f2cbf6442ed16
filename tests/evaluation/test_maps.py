"""MapCache: a model's maps kept under the pair key, computed once per (image, class) and method."""

import torch

from apkit import explain, models
from apkit.evaluation.maps import MapCache
from apkit.evaluation.pairs import pair_keys


def _net():
    torch.manual_seed(0)
    return models.create("vgg_small", num_classes=3, input_size=32, width_divisor=8).eval()


def test_the_map_cache_reads_maps_under_the_same_key():
    net = _net()
    cache = MapCache(net)
    images, index = torch.randn(2, 3, 32, 32), torch.tensor([4, 9])
    first = cache.maps("gradcam", index, images, torch.tensor([[0, 1], [1, 2], [0, 1]]))
    assert cache.stored("gradcam") == 2 and torch.equal(first[0], first[2])  # a key asked twice is stored once
    stored = cache._maps["gradcam"].keys.tolist()
    assert stored == sorted(pair_keys(torch.tensor([4, 9]), torch.tensor([1, 2])).tolist())


def test_the_cache_computes_only_what_is_missing_and_gives_what_explain_gives():
    net = _net()
    cache = MapCache(net)
    images, index = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])
    calls = []
    handle = net.register_forward_hook(lambda _m, inputs, _o: calls.append(len(inputs[0])))
    try:
        first = cache.maps("gradcam", index, images, torch.tensor([[0, 0], [1, 1]]))
        both = cache.maps("gradcam", index, images, torch.tensor([[1, 1], [2, 0], [0, 0]]))
    finally:
        handle.remove()
    assert calls == [2, 1]  # the second call explains only (2, 0)
    torch.testing.assert_close(both[0], first[1])
    torch.testing.assert_close(both[2], first[0])
    torch.testing.assert_close(both[1], explain(net, images[2:3], torch.tensor([0]), method="gradcam")[0])
    logits = cache.logits(index, images)
    torch.testing.assert_close(logits, net(images).detach())
    assert cache.stored("gradcam") == 3 and cache.stored("lrp") == 0
