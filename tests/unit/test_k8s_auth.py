"""Credentials without the official client (k8s/auth.py): in-cluster as client-go reads them, kubeconfigs as kubectl
reads them (relative paths against the file, the first of several files winning), plugins refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aitbc_operator.k8s import auth


def service_account(tmp_path: Path, token: str = "tok-1\n") -> Path:
    directory = tmp_path / "sa"
    directory.mkdir()
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (directory / "namespace").write_text("aitbc-system\n")
    return directory


def kubeconfig(path: Path, *, user: dict[str, object], context: str = "c", server: str = "https://k:6443") -> Path:
    path.write_text(yaml.safe_dump({
        "current-context": context,
        "contexts": [{"name": context, "context": {"cluster": "k", "user": "u", "namespace": "apps"}}],
        "clusters": [{"name": "k", "cluster": {"server": server, "certificate-authority": "pki/ca.crt"}}],
        "users": [{"name": "u", "user": user}],
    }))
    return path


def test_in_cluster_uses_the_service_host_and_port_and_the_mounted_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = service_account(tmp_path)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    info = auth.in_cluster(directory)
    assert info is not None
    assert (info.server, info.token, info.default_namespace) == ("https://10.96.0.1:443", "tok-1", "aitbc-system")
    assert info.ca_path == str(directory / "ca.crt")
    assert info.as_http_headers() == {"Authorization": "Bearer tok-1"}
    (directory / "token").write_text("tok-2")  # the kubelet rotated it: the next read has the new one
    again = auth.in_cluster(directory)
    assert again is not None
    assert again.token == "tok-2"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    ipv6 = auth.in_cluster(directory)
    assert ipv6 is not None
    assert ipv6.server == "https://[fd00::1]:443"


def test_not_in_a_cluster_without_the_environment_or_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = service_account(tmp_path)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    assert auth.in_cluster(directory) is None
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    assert auth.in_cluster(tmp_path / "elsewhere") is None


def test_a_kubeconfig_resolves_relative_files_against_itself(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    token_file = tmp_path / "conf" / "token"
    token_file.write_text("from-file\n")
    path = kubeconfig(tmp_path / "conf" / "kubeconfig", user={"tokenFile": "token"})
    info = auth.from_kubeconfig(str(path))
    assert info.server == "https://k:6443"
    assert info.ca_path == str(tmp_path / "conf" / "pki" / "ca.crt")
    assert (info.token, info.default_namespace) == ("from-file", "apps")


def test_of_several_kubeconfigs_the_first_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = kubeconfig(tmp_path / "a", user={"token": "first"})
    second = kubeconfig(tmp_path / "b", user={"token": "second"}, server="https://other:6443")
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    info = auth.from_kubeconfig()
    assert (info.server, info.token) == ("https://k:6443", "first")


@pytest.mark.parametrize("plugin", ["exec", "auth-provider"])
def test_credential_plugins_are_refused_by_name(tmp_path: Path, plugin: str) -> None:
    path = kubeconfig(tmp_path / "kubeconfig", user={plugin: {"command": "aws"}})
    with pytest.raises(auth.LoginError, match="exec or auth-provider plugin"):
        auth.from_kubeconfig(str(path))


def test_a_kubeconfig_without_a_current_context_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(auth.LoginError, match="no current context"):
        auth.from_kubeconfig(str(path))
