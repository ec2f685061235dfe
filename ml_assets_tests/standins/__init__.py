"""The upstream images docker-compose.yml and the Dockerfile name, or stand-ins where no registry serves them.

    ensure_images(["python:3.11-slim-bookworm", "postgres:15", ...])   # name -> how it was obtained

An image Docker already has and that is no stand-in is used as it is; one Docker does not have is
pulled. Where the pull fails (no registry reachable), a stand-in with the same name is built from
the folder here named after its repository (python, postgres, redis, pgbouncer): Debian bookworm's
packages on a `debootstrap --variant=minbase` root, with an entry point doing what the compose
file uses of the upstream image's, and nothing more. Every stand-in carries the label
org.ml-assets.standin (and org.ml-assets.standin.hash: what it was built from), so it is never
taken for the upstream image.

Cached, where that is safe: a stand-in is rebuilt only when its files, its base or (for python) the
host's CA bundle change, and the debootstrap root is kept as a tarball outside the repository
($XDG_CACHE_HOME/ml_assets/standins), so a new root is made only where none was made before.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
LABEL = "org.ml-assets.standin"
HASH_LABEL = "org.ml-assets.standin.hash"
DEBOOTSTRAP_IMAGE = "ml-assets-standin/debootstrap:bookworm"  # the bare root (debian/Dockerfile's FROM)
BASE_IMAGE = "ml-assets-standin/debian:bookworm"  # every stand-in's FROM
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# Upstream repository -> folder of its stand-in here.
STANDINS = {"python": "python", "postgres": "postgres", "redis": "redis", "edoburu/pgbouncer": "pgbouncer"}


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ml_assets" / "standins"


def host_ca_bundle() -> Path:
    """The CA bundle this machine's pip trusts (a TLS proxy's CA included), given to the Python stand-in."""
    candidates = (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), ssl.get_default_verify_paths().cafile)
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return Path("/etc/ssl/certs/ca-certificates.crt")


def docker(*args: str, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check)


def image_labels(name: str) -> dict[str, str] | None:
    """The image's labels ({} if none), or None where Docker does not have it."""
    found = docker("image", "inspect", "--format", "{{json .Config.Labels}}", name, check=False)
    if found.returncode != 0:
        return None
    return json.loads(found.stdout) or {}


def image_id(name: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", name).stdout.strip()


def repository(name: str) -> str:
    return name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name


def ensure_images(names: list[str]) -> dict[str, str]:
    """Each image present under its name; how each got there: present, pulled, stand-in (built or cached).

    The stand-ins are built side by side, on one base built first: most of their time is apt's downloads.
    """
    with _locked():
        how = {name: _present_or_pulled(name) for name in names}
        wanted = [name for name, got in how.items() if got is None]
        if wanted:
            base = _base()
            with ThreadPoolExecutor(len(wanted)) as pool:
                how.update(zip(wanted, pool.map(lambda name: _standin(name, base), wanted), strict=True))
        return how


def _present_or_pulled(name: str) -> str | None:
    """How Docker has the upstream image (present, or pulled now); None where a stand-in is needed."""
    labels = image_labels(name)
    if labels is not None and LABEL not in labels:
        return "present"
    if labels is None and docker("pull", "--quiet", name, timeout=300, check=False).returncode == 0:
        return "pulled"
    return None


def _standin(name: str, base: str) -> str:
    folder = STANDINS.get(repository(name))
    if folder is None:
        raise RuntimeError(f"{name}: Docker does not have it, it cannot be pulled, and there is no stand-in for it")
    extra = {"host-ca-certificates.crt": host_ca_bundle()} if folder == "python" else {}
    return _build(name, HERE / folder, extra, base=base)


def _base() -> str:
    """BASE_IMAGE's id, built (on the debootstrap root) where missing or stale."""
    _build(BASE_IMAGE, HERE / "debian", {}, base=None)
    return image_id(BASE_IMAGE)


def _build(name: str, folder: Path, extra: dict[str, Path], base: str | None) -> str:
    """`name` built from `folder` (plus `extra` files) unless the image of that name was built from the same."""
    digest = hashlib.sha256((base or "").encode())
    for path in [*sorted(p for p in folder.iterdir() if p.is_file()), *(extra[key] for key in sorted(extra))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    wanted = digest.hexdigest()
    if (image_labels(name) or {}).get(HASH_LABEL) == wanted:
        return "stand-in (cached)"
    if base is None:
        _import_debootstrap_root()
    with tempfile.TemporaryDirectory(prefix="ml_assets_standin_") as context:
        shutil.copytree(folder, context, dirs_exist_ok=True)
        for target, source in extra.items():
            shutil.copy(source, Path(context) / target)
        built = docker("build", "--quiet", "--label", f"{HASH_LABEL}={wanted}", "--tag", name, context, check=False)
    if built.returncode != 0:
        raise RuntimeError(f"building the stand-in {name} failed:\n{built.stdout[-3000:]}{built.stderr[-3000:]}")
    return "stand-in"


def _import_debootstrap_root() -> None:
    """DEBOOTSTRAP_IMAGE from the cached root tarball, made first with debootstrap where there is none."""
    if image_labels(DEBOOTSTRAP_IMAGE) is not None:
        return
    tarball = cache_dir() / "debootstrap-bookworm-minbase.tar"
    if not tarball.exists():
        if shutil.which("debootstrap") is None:
            raise RuntimeError("no registry serves the images and debootstrap is missing: install Debian's debootstrap")
        with tempfile.TemporaryDirectory(prefix="ml_assets_debootstrap_") as root:
            made = subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", root, DEBIAN_MIRROR],
                capture_output=True,
                text=True,
                timeout=1200,
            )
            if made.returncode != 0:
                raise RuntimeError(f"debootstrap failed:\n{made.stdout[-3000:]}{made.stderr[-3000:]}")
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "--create", "--file", str(partial), "--directory", root, "."], check=True)
            partial.replace(tarball)
    with tarball.open("rb") as root:
        subprocess.run(
            ["docker", "import", "--change", f"LABEL {LABEL}=debootstrap", "-", DEBOOTSTRAP_IMAGE],
            stdin=root,
            capture_output=True,
            check=True,
            timeout=600,
        )


@contextlib.contextmanager
def _locked():
    """One builder at a time on this machine (two test sessions would build the same images)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with (cache_dir() / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
