"""Two CPU processes (gloo) against one process on the concatenated batch.

Why the gradient relation is ``grad_rank_r == world_size * grad_single[slice_r]``: with
``gather_cat`` every rank computes the *global* loss L (VICReg: its variance and covariance
terms; its invariance term is a local mean whose gradient is also world_size times the global
mean's), and ``_GatherWithGrad.backward`` sums dL/dz_r over the world_size ranks, which all hold
the same L. DDP then averages the parameter gradients over ranks:
``(1 / W) * sum_r W * grad_single[slice_r] = grad_single``, the single-process step. The last
test checks that end-to-end guarantee on a DDP-wrapped model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from selfsup.data.views import make_views, ssl_view
from selfsup.distributed import any_rank, mark_synced, mean_across_ranks, synced_buffer_names
from selfsup.losses import (
    barlow_twins_loss,
    dino_center_update,
    multi_crop_nt_xent_loss,
    nt_xent_loss,
    vicreg_loss,
)
from selfsup.parts.queue import FeatureQueue
from selfsup.parts.shuffle_bn import shuffled_forward
from selfsup.train.loop import BatchStream

WORLD, N, D, IN_DIM, K = 2, 8, 5, 6, 6
B = N // WORLD
LOSSES: dict[str, Callable] = {
    "vicreg": vicreg_loss,
    "barlow": barlow_twins_loss,
    "nt_xent": functools.partial(nt_xent_loss, temperature=0.5),
    # three crops of each image: the third a mix of the two, row by row as the shards are
    "multi_crop_nt_xent": lambda a, b: multi_crop_nt_xent_loss(
        [a, b, 0.5 * a - b], temperature=0.5
    ),
}
TOL = {"rtol": 1e-5, "atol": 1e-6}

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    z_a = torch.randn(N, D, generator=g) * torch.linspace(0.3, 2.0, D)
    x_a = torch.randn(N, IN_DIM, generator=g)
    return {
        "z_a": z_a,
        "z_b": z_a + 0.5 * torch.randn(N, D, generator=g),
        "x_a": x_a,
        "x_b": x_a + 0.3 * torch.randn(N, IN_DIM, generator=g),
        "teacher": torch.randn(2, N, D, generator=g),
        "center": torch.randn(1, D, generator=g),
        "keys": torch.arange(2 * N * 3, dtype=torch.float32).view(2, N, 3),
    }


class TwoView(nn.Module):
    """One forward for both views, as a method wrapped whole in DDP does."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(IN_DIM, D)
        with torch.no_grad():
            g = torch.Generator().manual_seed(1)
            self.proj.weight.copy_(torch.randn(D, IN_DIM, generator=g))
            self.proj.bias.copy_(torch.randn(D, generator=g))

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.proj(x_a), self.proj(x_b)


def _embedding_step(fn: Callable, z_a: torch.Tensor, z_b: torch.Tensor) -> dict:
    a, b = z_a.clone().requires_grad_(True), z_b.clone().requires_grad_(True)
    loss, parts = fn(a, b)
    loss.backward()
    return {"loss": loss.detach(), "parts": parts, "grad_a": a.grad, "grad_b": b.grad}


def _sgd_step(model: nn.Module, fn: Callable, x_a: torch.Tensor, x_b: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss, _ = fn(*model(x_a, x_b))
    opt.zero_grad()
    loss.backward()
    opt.step()


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        data, local = _data(), slice(rank * B, (rank + 1) * B)
        results: dict = {}
        for name, fn in LOSSES.items():
            results[name] = _embedding_step(fn, data["z_a"][local], data["z_b"][local])
            model = DistributedDataParallel(TwoView())
            _sgd_step(model, fn, data["x_a"][local], data["x_b"][local])
            results[name]["params"] = {k: v.clone() for k, v in model.module.state_dict().items()}
        fq = FeatureQueue(K, 3, generator=torch.Generator().manual_seed(0))
        for step in range(2):
            fq.enqueue(data["keys"][step, rank * 2 : rank * 2 + 2])  # 2 keys per rank and step
        results["queue"], results["ptr"] = fq.queue, fq.ptr
        teacher_crops = [t[local] for t in data["teacher"]]
        results["center"] = dino_center_update(data["center"], teacher_crops, momentum=0.9)
        results["any"] = (any_rank(rank == 1), any_rank(False))  # rank 1 alone diverged
        results["mean"] = mean_across_ranks(torch.tensor([float(rank) + 1.0]))
        torch.manual_seed(rank)  # only rank 0's permutation counts: it is broadcast
        x = torch.arange(WORLD * 8, dtype=torch.float32).view(-1, 1)[rank * 8 : (rank + 1) * 8]
        seen: list[torch.Tensor] = []
        keys = shuffled_forward(lambda t: seen.append(t.clone()) or t * 2, x)
        results["shuffle"] = {"x": x, "keys": keys, "seen": seen[0]}
        torch.manual_seed(100 + rank)  # each process's own RNG state differs (issue #26.2)
        stream = BatchStream(20, 4, seed=3, rank=rank, world=WORLD)
        results["shards"] = [[b.tolist() for b in stream.epoch(e)] for e in range(2)]
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(tmp / "pg_init"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_and_embedding_gradients_match_single_process(ranks: list[dict], name: str) -> None:
    data = _data()
    single = _embedding_step(LOSSES[name], data["z_a"], data["z_b"])
    for r, res in enumerate(ranks):
        local = slice(r * B, (r + 1) * B)
        got = res[name]
        torch.testing.assert_close(got["grad_a"], WORLD * single["grad_a"][local], **TOL)
        torch.testing.assert_close(got["grad_b"], WORLD * single["grad_b"][local], **TOL)
        if name == "vicreg":  # the invariance term is a local mean: only global parts match
            for part in ("variance", "covariance"):
                torch.testing.assert_close(got["parts"][part], single["parts"][part], **TOL)
        else:
            torch.testing.assert_close(got["loss"], single["loss"], **TOL)
            for part, value in single["parts"].items():
                torch.testing.assert_close(got["parts"][part], value, **TOL)
    mean_loss = sum(res[name]["loss"] for res in ranks) / WORLD
    torch.testing.assert_close(mean_loss, single["loss"], **TOL)
    assert single["grad_a"].abs().sum() > 0


@pytest.mark.parametrize("name", list(LOSSES))
def test_ddp_sgd_step_equals_single_process_step(ranks: list[dict], name: str) -> None:
    data = _data()
    model = TwoView()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _sgd_step(model, LOSSES[name], data["x_a"], data["x_b"])
    for res in ranks:
        for key, value in model.state_dict().items():
            torch.testing.assert_close(res[name]["params"][key], value, **TOL)
    assert not torch.allclose(before["proj.weight"], model.proj.weight)


def test_feature_queue_receives_every_rank_in_rank_order(ranks: list[dict]) -> None:
    keys = _data()["keys"]
    # written in order: step 0 rank 0, step 0 rank 1, step 1 rank 0, step 1 rank 1 (2 each)
    sequence = torch.cat([keys[s, r * 2 : r * 2 + 2] for s in range(2) for r in range(WORLD)])
    expected = sequence[[6, 7, 2, 3, 4, 5]]  # 8 keys into 6 slots: the first two wrap around
    for res in ranks:
        torch.testing.assert_close(res["queue"], expected)
        assert res["ptr"].item() == 8 % K


def test_dino_center_uses_the_global_batch_mean(ranks: list[dict]) -> None:
    data = _data()
    expected = dino_center_update(data["center"], list(data["teacher"]), momentum=0.9)
    for res in ranks:
        torch.testing.assert_close(res["center"], expected, **TOL)


def test_a_shard_of_the_views_is_those_rows_of_the_global_batchs_views() -> None:
    """Each rank draws the view parameters of the whole global batch and keeps its rows, so the
    views of samples rank::world equal one process's views of the global batch."""
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    m, s = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    specs = [ssl_view(16, m, s, blur_p=0.5, solarize_p=0.5), ssl_view(12, m, s)]
    whole = make_views(images, specs, torch.Generator().manual_seed(3))
    for r in range(2):
        part = make_views(images[r::2], specs, torch.Generator().manual_seed(3), shard=(r, 2))
        for v, w in zip(part, whole, strict=True):
            torch.testing.assert_close(v, w[r::2])
    unsharded = make_views(images[1::2], specs, torch.Generator().manual_seed(3))
    assert not torch.allclose(unsharded[0], whole[0][1::2])  # the check above can fail
    with pytest.raises(ValueError, match="shard"):
        make_views(images, specs, torch.Generator(), shard=(2, 2))


def test_shuffle_bn_spans_the_global_batch_and_returns_keys_in_order(ranks: list[dict]) -> None:
    """MoCo's ``_batch_shuffle_ddp``: each rank encodes a share of the shuffled global batch
    (here, some of the other rank's samples), and gets its own samples' keys back in order."""
    seen = [r["shuffle"]["seen"].flatten().tolist() for r in ranks]
    assert sorted(seen[0] + seen[1]) == list(range(WORLD * 8))
    assert set(seen[0]) != set(range(8))  # the shares were mixed across ranks
    for r in ranks:
        assert torch.equal(r["shuffle"]["keys"], 2 * r["shuffle"]["x"])


def test_synced_buffers_are_named_for_ddp_to_leave_out() -> None:
    root = nn.Module()
    root.queue = FeatureQueue(8, 4)
    root.head = nn.BatchNorm1d(4)
    mark_synced(root, "center")
    assert sorted(synced_buffer_names(root)) == ["center", "queue.ptr", "queue.queue"]


def test_a_divergence_on_one_rank_is_seen_by_every_rank(ranks: list[dict]) -> None:
    """The loop stops (or skips a step) on every rank together when one rank's loss is not
    finite; alone, the others would wait at the next collective. DINO-Twins' step-0 weight is
    the mean over ranks."""
    assert [r["any"] for r in ranks] == [(True, False)] * WORLD
    for r in ranks:
        torch.testing.assert_close(r["mean"], torch.tensor([1.5]))


def test_a_cpu_run_under_torchrun_on_a_gpu_host_uses_gloo(monkeypatch) -> None:
    """Issue #26.6: train.device=cpu on a GPU host picked NCCL and failed on CPU tensors."""
    import torch.distributed as dist

    from selfsup import distributed

    chosen, gpus = [], []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", gpus.append)
    monkeypatch.setattr(dist, "init_process_group", chosen.append)
    assert distributed.init_from_env("cpu") and chosen == ["gloo"] and gpus == []
    assert distributed.init_from_env("auto") and chosen[-1] == "nccl" and gpus == [0]


def test_the_ranks_shards_of_an_epoch_are_disjoint_and_cover_it(ranks: list[dict]) -> None:
    """Issue #26.2 in two processes: whatever each process's own random state (or, on GPUs,
    where it put its images: the shuffle is drawn by a CPU generator, tests/test_train.py), the
    two ranks' shards of an epoch never overlap and together cover every image; the next epoch
    reshuffles."""
    epochs = []
    for e in range(2):
        mine, theirs = ([i for batch in r["shards"][e] for i in batch] for r in ranks)
        assert len(mine) == len(theirs) == 10 and not set(mine) & set(theirs)
        assert sorted(mine + theirs) == list(range(20))
        epochs.append(ranks[0]["shards"][e])
    assert epochs[0] != epochs[1]
