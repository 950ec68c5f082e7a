"""The traced, thread-split UNet runner (priors/graph.py) gives the direct call's numbers: bit for bit in bfloat16
(the default, then on one thread as on two), to float32's last bits otherwise (as a direct float32 call's, they
depend on the thread count)."""

import pytest
import torch

from threedistill.priors import load_prior
from threedistill.priors.graph import GraphUNet, _chunks, use_graph


@pytest.fixture(autouse=True)
def no_warmup(monkeypatch):
    """Every eligible call goes through the graph here (runs trace a signature after `warmup_calls` calls)."""
    monkeypatch.setattr(GraphUNet, "warmup_calls", 0)


def _inputs(prior, batch, seed=0):
    gen = torch.Generator().manual_seed(seed)
    size = prior.native_resolution
    x = torch.randn(batch, prior.channels, size, size, generator=gen)
    t = torch.randint(20, 980, (batch,), generator=gen)
    emb = prior.encode_prompt(["a red cone", ""] * (batch // 2) + ["a blue duck"] * (batch % 2))
    return x, t, emb


def _both(prior, x, t, emb, **cond):
    """(through the graph, direct on one thread), both without gradient. The graph runs each chunk on one thread;
    a float32 convolution's last bits depend on the thread count (bfloat16's do not)."""
    threads = torch.get_num_threads()
    with torch.no_grad():
        prior.use_graph = True
        fast = prior._unet(x, t, emb, **cond)
        prior.use_graph = False
        torch.set_num_threads(1)
        try:
            slow = prior._unet(x, t, emb, **cond)
        finally:
            prior.use_graph = True
            torch.set_num_threads(threads)
    return fast, slow


@pytest.mark.parametrize("precision", ["bfloat16", "float32"])
@pytest.mark.parametrize("batch", [8, 3, 1])
def test_graph_output_is_bitwise_the_direct_output(precision, batch):
    prior = load_prior(precision=precision)
    assert prior.use_graph and prior.graph is not None  # the toy prior on the CPU takes the graph
    x, t, emb = _inputs(prior, batch)
    fast, slow = _both(prior, x, t, emb)
    assert fast.dtype == slow.dtype and fast.shape == slow.shape
    if precision == "bfloat16":  # the default: the same bits
        assert torch.equal(fast, slow)
    else:  # float32's last bits depend on how the batch is cut
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    again, _ = _both(prior, x, t, emb)  # the graph's later (optimised) runs keep the numbers
    assert torch.equal(again, fast)


def test_one_thread_and_two_give_the_same_numbers_in_bfloat16():
    prior = load_prior(precision="bfloat16")
    x, t, emb = _inputs(prior, 6, seed=3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _ = _both(prior, x, t, emb)
        torch.set_num_threads(2)
        two, _ = _both(prior, x, t, emb)
    finally:
        torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads  # the split gives the threads back
    assert torch.equal(one, two)


def test_a_precision_change_traces_again():
    prior = load_prior(precision="float32")
    x, t, emb = _inputs(prior, 4)
    first = prior.graph
    fast32, slow32 = _both(prior, x, t, emb)
    prior.set_precision("bfloat16")
    assert prior.graph is not first
    fast16, slow16 = _both(prior, x, t, emb)
    torch.testing.assert_close(fast32, slow32, rtol=1e-5, atol=1e-5)
    assert torch.equal(fast16, slow16)
    assert not torch.equal(fast32, fast16)


def test_weights_changed_in_place_are_traced_again():
    prior = load_prior(precision="bfloat16")
    x, t, emb = _inputs(prior, 2)
    before, _ = _both(prior, x, t, emb)
    with torch.no_grad():
        prior.unet.conv_out.bias.add_(0.5)
    after, direct = _both(prior, x, t, emb)
    assert torch.equal(after, direct) and not torch.equal(after, before)


def test_calls_it_cannot_cut_run_directly():
    prior = load_prior(precision="bfloat16")
    x, t, emb = _inputs(prior, 4)
    graph = prior.graph
    assert graph.applies(x, emb, {}) is False  # gradient is on here
    with torch.no_grad():
        assert graph.applies(x, emb, {}) and not graph.applies(x, emb[:1], {})  # one prompt row for four images
        assert not graph.applies(x, emb, {"class_labels": torch.zeros(2, 16)})
        fast = prior._unet(x, t, emb[:1].expand(4, -1, -1).contiguous())
        assert fast.shape == x.shape


def test_calls_with_gradient_run_directly():
    prior = load_prior(precision="float32")
    x, t, emb = _inputs(prior, 2)
    x.requires_grad_(True)
    out = prior._unet(x, t, emb)
    out.sum().backward()  # a traced, frozen graph would give no gradient
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_multiview_sets_are_never_cut():
    assert _chunks(8, 2, 4) == [(0, 4), (4, 8)]
    assert _chunks(4, 2, 4) == [(0, 4)]
    assert _chunks(12, 2, 4) == [(0, 4), (4, 12)] or _chunks(12, 2, 4) == [(0, 8), (8, 12)]
    assert _chunks(5, 2, 1) in ([(0, 2), (2, 5)], [(0, 3), (3, 5)])
    assert _chunks(1, 2, 1) == [(0, 1)]
    for batch, parts, group in [(8, 2, 4), (12, 3, 4), (7, 2, 1), (16, 4, 4)]:
        ranges = _chunks(batch, parts, group)
        assert ranges[0][0] == 0 and ranges[-1][1] == batch
        assert all(a < b and (b - a) % group == 0 for a, b in ranges)
        assert all(b == c for (_, b), (c, _) in zip(ranges, ranges[1:]))


def test_multiview_prior_through_the_graph_matches_the_direct_call():
    from threedistill.cameras import sample_orbit

    prior = load_prior("toyworld-mv")
    views = prior.num_views
    x, t, emb = _inputs(prior, 2 * views, seed=5)
    t = t[::views].repeat_interleave(views)  # one timestep per set
    cams = sample_orbit(torch.Generator().manual_seed(0), 2 * views, views_per_set=views)
    with prior.viewing(cams.c2w):
        fast, slow = _both(prior, x, t, emb)
    assert torch.equal(fast, slow)


def test_a_signature_is_traced_only_after_its_warmup_calls(monkeypatch, tmp_path):
    monkeypatch.setenv("THREEDISTILL_CACHE", str(tmp_path))  # nothing traced before, by another test
    monkeypatch.setattr(GraphUNet, "warmup_calls", 2)
    prior = load_prior(precision="bfloat16")
    x, t, emb = _inputs(prior, 4)
    with torch.no_grad():
        outs = [prior._unet(x, t, emb) for _ in range(3)]
        assert len(prior.graph._graphs) == 1  # the third call traced it
        prior._unet(x[:2], t[:2], emb[:2])
        assert len(prior.graph._graphs) == 1  # a new signature starts its own count
    assert all(torch.equal(o, outs[0]) for o in outs)


def test_large_or_gpu_models_run_directly():
    small = torch.nn.Linear(4, 4)
    assert use_graph(small, torch.device("cpu"))
    assert not use_graph(small, torch.device("meta"))
    big = torch.nn.Module()
    big.w = torch.nn.Parameter(torch.empty(60_000_000, device="meta"))
    assert not use_graph(big, torch.device("cpu"))


def test_a_traced_graph_is_kept_on_disk_and_a_later_prior_starts_from_it(monkeypatch, tmp_path):
    """The first prior traces its graph after the warm-up and saves it; a second one (a later process) loads it,
    in bfloat16 without warm-up and without loading the UNet module, and gets the same bits. A damaged file is
    traced again; weights written in place are never served from the file of the weights as loaded."""
    monkeypatch.setenv("THREEDISTILL_CACHE", str(tmp_path))
    monkeypatch.setattr(GraphUNet, "warmup_calls", 2)
    first = load_prior(precision="bfloat16")
    x, t, emb = _inputs(first, 4, seed=3)
    with torch.no_grad():
        expected = [first._unet(x, t, emb) for _ in range(3)][0]
    files = list((tmp_path / "unet-graphs").glob("*.pt"))
    assert files, "the traced graph was not saved"

    def no_tracing(*args, **kwargs):
        raise AssertionError("traced although the graph was on disk")

    monkeypatch.setattr(torch.jit, "trace", no_tracing)
    second = load_prior(precision="bfloat16")
    assert "unet" not in second.__dict__  # started from the bundle the first prior wrote
    with torch.no_grad():
        out = second._unet(x, t, emb)
    assert len(second.graph._graphs) >= 1 and "unet" not in second.__dict__
    assert torch.equal(out, expected)

    for f in files:
        f.write_bytes(b"not a graph")
    monkeypatch.undo()
    monkeypatch.setenv("THREEDISTILL_CACHE", str(tmp_path))
    monkeypatch.setattr(GraphUNet, "warmup_calls", 0)
    third = load_prior(precision="bfloat16")
    with torch.no_grad():
        assert torch.equal(third._unet(x, t, emb), expected)  # traced again over the damaged file
        with torch.no_grad():
            for p in third.unet.parameters():
                p.mul_(1.5)
                break
        changed = third._unet(x, t, emb)
        third.use_graph = False
        direct = third._unet(x, t, emb)
    assert torch.equal(changed, direct) and not torch.equal(changed, expected)
