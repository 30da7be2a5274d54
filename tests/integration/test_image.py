"""The image built here (hack/build-image.sh, the project's Dockerfile on a Debian base):
every command runs in it as 65532:65532 on a read-only root, and nothing of the build
(wheels, pip) is left in it. Run with podman, without a network."""

from __future__ import annotations

from tests.support.images import BuiltImage

SANDBOX = (
    "run",
    "--rm",
    "--network=none",
    "--read-only",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
)


def test_every_command_starts_in_the_image(wardgate_image: BuiltImage) -> None:
    result = wardgate_image.podman(*SANDBOX, wardgate_image.ref, "--help")
    assert result.returncode == 0, result.stderr
    for command in ("gateway", "operator", "dev-cluster", "demo", "validate", "explain"):
        assert f"    {command}" in result.stdout
    # `wardgate demo` imports wardgate.demo, which the image once lacked.
    demo = wardgate_image.podman(*SANDBOX, wardgate_image.ref, "demo", "--help")
    assert demo.returncode == 0, demo.stderr


def test_the_image_runs_as_65532_with_nothing_of_the_build_left(
    wardgate_image: BuiltImage,
) -> None:
    result = wardgate_image.podman(
        *SANDBOX,
        "--entrypoint=sh",
        wardgate_image.ref,
        "-c",
        "id -u; id -g; ls -d /wheels /opt/wardgate/bin/pip /src 2>&1; "
        "ls /opt/wardgate/lib/python3*/site-packages/kubernetes",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["65532", "65532"]
    assert sum("No such file or directory" in line for line in lines) == 3, result.stdout
    assert "client" in lines
    assert "aio" not in lines
