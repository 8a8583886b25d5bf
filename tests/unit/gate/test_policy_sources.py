"""Policy loading without a cluster: shards round trip, file source, last good policy kept."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from support.gate import scenario_policy, write_policy
from tollplane.api.policy import Policy
from tollplane.api.shards import PolicyAssemblyError, assemble, configmaps, shard_bytes
from tollplane.gate.loader import FileSource, PolicyHolder

UP, DEAD = "http://up.test", "http://dead.test"


def test_shards_round_trip_with_many_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tollplane.api.shards.SHARD_BYTES", 4096)
    policy = scenario_policy(UP, DEAD, extra_tenants=2000)
    index, shards = configmaps(policy, "ns")
    assert len(shards) > 3
    data = {cm["metadata"]["name"]: shard_bytes(cm) for cm in shards}
    assert assemble(index["data"], data) == policy
    partial = dict(list(data.items())[:-1])
    with pytest.raises(PolicyAssemblyError, match="waiting for shard"):
        assemble(index["data"], partial)
    first = next(iter(data))
    corrupt = {**data, first: b"x" + data[first][1:]}
    with pytest.raises(PolicyAssemblyError, match="digest"):
        assemble(index["data"], corrupt)


def test_holder_swaps_only_new_valid_revisions() -> None:
    holder = PolicyHolder()
    one = scenario_policy(UP, DEAD)
    assert holder.offer(one, "test")
    assert not holder.offer(one, "test")  # same revision: nothing to do
    bad = Policy(routes=[one.routes[0].model_copy(update={"upstream_url": "nope"})]).sealed()
    assert not holder.offer(bad, "test")
    assert holder.index is not None
    assert holder.index.revision == one.revision
    assert holder.errors == 1


def test_file_source_keeps_last_good_policy(tmp_path: Path) -> None:
    holder = PolicyHolder()
    path = tmp_path / "policy.json"
    source = FileSource(tmp_path, holder)
    source.poll()
    assert holder.index is None  # nothing yet: not ready
    one = scenario_policy(UP, DEAD)
    write_policy(path, one)
    source.poll()
    assert holder.index is not None
    assert holder.index.revision == one.revision
    path.write_text('{"routes": [')  # truncated JSON
    source.poll()
    path.write_text('{"routes": [], "bogus": 1}')  # unknown field
    source.poll()
    assert holder.index.revision == one.revision
    assert holder.errors == 2
    two = scenario_policy(UP + ":81", DEAD)
    path.write_bytes(gzip.compress(two.model_dump_json(by_alias=True).encode()))
    source.poll()
    assert holder.index.revision == two.revision


def test_unsealed_file_gets_a_revision(tmp_path: Path) -> None:
    holder = PolicyHolder()
    (tmp_path / "p.json").write_text("{}")
    FileSource(tmp_path / "p.json", holder).poll()
    assert holder.index is not None
    assert holder.index.revision == Policy().sealed().revision
