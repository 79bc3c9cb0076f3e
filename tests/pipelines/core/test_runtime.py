"""Where Ray runs: the embedded default never joins a Ray that happens to run on the machine."""

from __future__ import annotations


def test_embedded_ray_is_always_a_new_one(monkeypatch):
    """A plain ray.init() joins RAY_ADDRESS, /tmp/ray/ray_current_cluster or any running GCS (another user's `ray
    start`, a test's cluster); without an address we must start our own, so init_ray asks for address='local'."""
    import ray

    from pipelines.core import runtime

    calls = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(ray.data.DataContext, "get_current", lambda: type("C", (), {})())
    assert runtime.init_ray(num_cpus=1)
    assert calls[0]["address"] == "local" and calls[0]["num_cpus"] == 1
    calls.clear()
    runtime.init_ray("10.0.0.1:6379")
    assert calls[0]["address"] == "10.0.0.1:6379"
