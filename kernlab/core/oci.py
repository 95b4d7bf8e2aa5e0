"""An OCI registry as kernlab sees it: oras-py underneath, with kernlab's rules on top.

oras-py (``oras`` on PyPI, the ORAS project's Python SDK) speaks the distribution
protocol and finds credentials where OCI tools keep them. Around it, this module adds
what kernlab needs and oras-py does not do:

- every request has a timeout, and none is retried behind the user's back (oras-py's
  own retry sleeps 3 + 5 + 11 + 29 + 83 s on an unreachable host): a registry that
  cannot be reached is one ``RegistryUnreachable`` at once;
- every blob is hashed while it streams in and compared with its digest and size
  (oras-py's ``download_blob`` writes whatever arrives): a mismatch is refused;
- a manifest fetched by digest is checked against that digest;
- plain HTTP only to a loopback address, or when asked for explicitly;
- a registry that answers ``Basic`` challenges (the CNCF registry with htpasswd) gets
  Basic credentials (oras-py's token backend only knows Bearer realms);
- failures are one-line ``KernlabError`` s; credentials never appear in them.

Credentials: ``KERNLAB_REGISTRY_TOKEN`` (with ``KERNLAB_REGISTRY_USER``, default
``kernlab``) if set, else ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``
(``docker login`` / ``oras login``; credential helpers too).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernlab.core.errors import KernlabError

if TYPE_CHECKING:
    import oras.container
    import requests

REGISTRY_ENV = "KERNLAB_REGISTRY"
INSECURE_ENV = "KERNLAB_REGISTRY_INSECURE"
TOKEN_ENV = "KERNLAB_REGISTRY_TOKEN"
USER_ENV = "KERNLAB_REGISTRY_USER"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"
TITLE = "org.opencontainers.image.title"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0
CHUNK = 1 << 20
UPLOAD_CHUNK = 64 << 20  # chunked uploads: oras-py's monolithic PUT reads the blob into memory
NAMESPACE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
HOST = re.compile(r"^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class RegistryUnreachable(KernlabError):
    """The registry did not answer (refused, timed out, name not found)."""


class NotInRegistry(KernlabError):
    """The registry answered, but has no such tag, manifest or blob."""


class RegistryDenied(KernlabError):
    """The registry wants credentials it did not get, or refused the ones given."""


class ArtifactRefused(KernlabError):
    """What the registry sent is not what was asked for (digest, size, type, record)."""


@dataclass(frozen=True)
class Address:
    """``host[:port]/namespace`` and whether it is spoken to over plain HTTP."""

    host: str
    namespace: str
    plain_http: bool

    def repository(self, name: str) -> str:
        """``host/namespace/name``: the repository of one kind of artifact."""
        return f"{self.host}/{self.namespace}/{name}"

    def __str__(self) -> str:
        return f"{self.host}/{self.namespace}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (without port) is a loopback address or ``localhost``."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_only(host: str) -> str:
    if host.startswith("["):
        return host[: host.index("]") + 1]
    return host.rsplit(":", 1)[0] if ":" in host else host


def parse_address(value: str, insecure: bool = False) -> Address:
    """The registry ``value`` names (``host[:port]/namespace``); HTTP only on loopback or
    with ``insecure`` (``--registry-insecure`` / ``KERNLAB_REGISTRY_INSECURE=1``)."""
    text = value.strip()
    for scheme in ("oci://", "https://", "http://"):
        text = text.removeprefix(scheme)
    host, _, namespace = text.partition("/")
    namespace = namespace.strip("/")
    if not HOST.match(host) or not namespace:
        raise KernlabError(f"registry {value!r} is not host[:port]/namespace",
                           "give e.g. --registry ghcr.io/OWNER/kernlab or 127.0.0.1:5000/kernlab")
    if not NAMESPACE.match(namespace):
        raise KernlabError(f"registry namespace {namespace!r} is not a valid OCI repository path",
                           "use lower-case letters, digits, '.', '_', '-' and '/'")
    loopback = is_loopback(_host_only(host))
    insecure = insecure or os.environ.get(INSECURE_ENV, "") not in ("", "0")
    return Address(host, namespace, plain_http=loopback or insecure)


def configured(value: str | None = None, insecure: bool = False) -> Address | None:
    """The registry named by ``--registry`` (``value``) or ``KERNLAB_REGISTRY``; None: none."""
    chosen = value if value is not None else os.environ.get(REGISTRY_ENV, "")
    return parse_address(chosen, insecure) if chosen.strip() else None


def _lib() -> Any:
    """kernlab.core.orasclient: oras-py and requests, imported when a registry is first used."""
    from kernlab.core import orasclient  # about half a second to import: not for every command

    return orasclient


def _docker_configs() -> list[str]:
    """The docker config files credentials may be in (oras-py adds ``~/.docker``)."""
    custom = os.environ.get("DOCKER_CONFIG")
    return [str(Path(custom) / "config.json")] if custom and (Path(custom) / "config.json").is_file() else []


class Client:
    """One registry: manifests and blobs in and out, verified, with one-line errors."""

    def __init__(self, address: Address) -> None:
        lib = _lib()
        self.address = address
        self._oras = lib.Oras(hostname=address.host, insecure=address.plain_http)
        auth = lib.Auth()
        auth.session, auth.prefix, auth._tls_verify = self._oras.session, self._oras.prefix, True
        self._oras.auth = auth
        self._with_timeouts(self._oras.session)
        self._credentials()

    @staticmethod
    def _with_timeouts(session: requests.Session) -> None:
        plain = session.request

        def request(method: str, url: str, **kwargs: Any) -> requests.Response:
            kwargs.setdefault("timeout", (CONNECT_TIMEOUT, READ_TIMEOUT))
            return plain(method, url, **kwargs)

        session.request = request  # type: ignore[method-assign]

    def _credentials(self) -> None:
        token = os.environ.get(TOKEN_ENV, "")
        if token:
            self._oras.auth.set_basic_auth(os.environ.get(USER_ENV, "") or "kernlab", token)
            return
        container = _lib().oras.container.Container(self.address.repository("kernel"))
        self._oras.auth.load_configs(container, configs=_docker_configs())

    @property
    def has_credentials(self) -> bool:
        return bool(getattr(self._oras.auth, "_basic_auth", None))

    # ------------------------------------------------------------ requests
    def _container(self, repo: str) -> oras.container.Container:
        return _lib().oras.container.Container(self.address.repository(repo))

    def _url(self, path: str) -> str:
        return f"{self._oras.prefix}://{path}"

    def _request(self, method: str, url: str, what: str, **kwargs: Any) -> requests.Response:
        """One request; unreachable, denied and server errors become KernlabErrors."""
        try:
            response = self._oras.do_request(url, method, **kwargs)
        except _lib().requests.exceptions.SSLError as error:
            raise RegistryUnreachable(f"registry {self.address}: TLS failed ({type(error).__name__})",
                                      f"use https with a valid certificate, or on a trusted network "
                                      f"set {INSECURE_ENV}=1 for plain HTTP") from None
        except (_lib().requests.exceptions.ConnectionError, _lib().requests.exceptions.Timeout) as error:
            raise RegistryUnreachable(f"registry {self.address} cannot be reached "
                                      f"({_reason(error)}) while {what}",
                                      f"check {REGISTRY_ENV} / --registry and that it runs") from None
        except ValueError as error:  # oras-py: a 401 it could not answer
            if "authentication" in str(error).lower():
                raise self._denied(what) from None
            raise
        if response.status_code in (401, 403):
            raise self._denied(what)
        if response.status_code >= 500:
            raise RegistryUnreachable(f"registry {self.address} failed with HTTP {response.status_code} "
                                      f"while {what}", "try again later; the registry's log says why")
        return response

    def _denied(self, what: str) -> RegistryDenied:
        given = "the credentials given were refused" if self.has_credentials else "no credentials"
        return RegistryDenied(f"registry {self.address} denied access ({given}) while {what}",
                              f"log in (`oras login {self.address.host}` or `docker login`) or set "
                              f"{TOKEN_ENV} (and {USER_ENV})")

    # ------------------------------------------------------------ reading
    def _found(self, response: requests.Response, what: str, fix: str) -> None:
        """NotInRegistry on 404, RegistryUnreachable on any other answer but 200."""
        if response.status_code == 404:
            response.close()
            raise NotInRegistry(f"{what} is not in the registry", fix)
        if response.status_code != 200:
            response.close()
            raise RegistryUnreachable(f"registry {self.address} answered HTTP {response.status_code} "
                                      f"for {what}", "try again; the registry's log says why")

    def manifest(self, repo: str, ref: str) -> tuple[dict[str, Any], str]:
        """The manifest ``repo:ref`` (a tag or a digest) and its digest; NotInRegistry if absent."""
        if not (TAG.match(ref) or DIGEST.match(ref)):
            raise KernlabError(f"{ref!r} is neither a tag nor a sha256 digest", "give a valid reference")
        url = self._url(self._container(repo).manifest_url(ref))
        response = self._request("GET", url, f"reading {repo}:{ref}", headers={"Accept": MANIFEST_TYPE})
        self._found(response, f"{self.address.repository(repo)}:{ref}",
                    "push it (`invoke push`) or build here")
        body = response.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if DIGEST.match(ref) and digest != ref:
            raise ArtifactRefused(f"the manifest of {repo}@{ref[:19]} hashes to {digest[:19]}",
                                  "the registry serves other bytes than asked for: do not use it")
        try:
            document = json.loads(body)
        except ValueError:
            raise ArtifactRefused(f"{repo}:{ref} is not a JSON manifest", "push it again") from None
        if not isinstance(document, dict) or document.get("mediaType", MANIFEST_TYPE) != MANIFEST_TYPE:
            raise ArtifactRefused(f"{repo}:{ref} is not an OCI image manifest", "push it again")
        return document, digest

    def fetch_blob(self, repo: str, descriptor: dict[str, Any], dest: Path,
                   progress: Callable[[int], None] | None = None) -> Path:
        """Download the blob ``descriptor`` names to ``dest`` (via ``dest.part``), checked
        against its digest and size before ``dest`` appears; a mismatch is refused."""
        digest, size = str(descriptor.get("digest", "")), int(descriptor.get("size", -1))
        if not DIGEST.match(digest) or size < 0:
            raise ArtifactRefused(f"a layer of {repo} names no valid sha256 digest and size",
                                  "push the artifact again")
        url = self._url(self._container(repo).get_blob_url(digest))
        part = dest.with_name(dest.name + ".part")
        hasher, got = hashlib.sha256(), 0
        title = (descriptor.get("annotations") or {}).get(TITLE, digest[:19])
        response = self._request("GET", url, f"downloading {title}", stream=True)
        with response:
            self._found(response, f"blob {digest[:19]} ({title}) of {repo}", "push the artifact again")
            try:
                with open(part, "wb") as handle:
                    for chunk in response.iter_content(CHUNK):
                        handle.write(chunk)
                        hasher.update(chunk)
                        got += len(chunk)
                        if progress:
                            progress(got)
                        if got > size:
                            break
            except (_lib().requests.exceptions.RequestException, ConnectionError) as error:
                part.unlink(missing_ok=True)
                raise RegistryUnreachable(f"registry {self.address} broke off {title} after "
                                          f"{got} of {size} bytes ({_reason(error)})",
                                          "try again: verified layers are kept, not fetched twice"
                                          ) from None
            except BaseException:
                part.unlink(missing_ok=True)
                raise
        found = "sha256:" + hasher.hexdigest()
        if got != size or found != digest:
            part.unlink(missing_ok=True)
            raise ArtifactRefused(f"{title} from {repo} does not match its digest: expected "
                                  f"{digest} ({size} bytes), got {found} ({got} bytes)",
                                  "the registry's copy is damaged or was replaced: push it again")
        os.replace(part, dest)
        return dest

    def tags(self, repo: str) -> list[str]:
        """The tags of ``repo`` ([] when it does not exist)."""
        url = self._url(self._container(repo).tags_url())
        response = self._request("GET", url, f"listing {repo}")
        if response.status_code == 404:
            return []
        return list((response.json() or {}).get("tags") or [])

    def ping(self) -> None:
        """Raise RegistryUnreachable / RegistryDenied unless the registry answers ``/v2/``."""
        self._request("GET", self._url(f"{self.address.host}/v2/"), "checking the registry")

    # ------------------------------------------------------------ writing
    def push_blob(self, repo: str, path: Path, media_type: str, title: str | None = None,
                  digest: str | None = None) -> dict[str, Any]:
        """Upload ``path`` (skipped if the registry has it); its descriptor."""
        digest = digest or "sha256:" + _sha256(path)
        descriptor: dict[str, Any] = {"mediaType": media_type, "digest": digest,
                                      "size": path.stat().st_size}
        if title:
            descriptor["annotations"] = {TITLE: title}
        container = self._container(repo)
        try:
            response = self._oras.upload_blob(str(path), container, descriptor, do_chunked=True,
                                              chunk_size=UPLOAD_CHUNK)
        except (_lib().requests.exceptions.ConnectionError, _lib().requests.exceptions.Timeout) as error:
            raise RegistryUnreachable(f"registry {self.address} broke off the upload of {title} "
                                      f"({_reason(error)})",
                                      "push again: layers already there are skipped") from None
        except ValueError as error:
            if "authentication" in str(error).lower():
                raise self._denied(f"uploading {title}") from None
            raise RegistryUnreachable(f"registry {self.address} refused {title}: {error}",
                                      "read the registry's log") from None
        self._accepted(response, f"uploading {title}")
        return descriptor

    def push_empty(self, repo: str) -> dict[str, Any]:
        """The OCI empty config (``{}``), uploaded; its descriptor."""
        digest = "sha256:" + hashlib.sha256(EMPTY_BLOB).hexdigest()
        container = self._container(repo)
        head = self._request("HEAD", self._url(container.get_blob_url(digest)), "checking the config")
        if head.status_code != 200:
            start = self._request("POST", self._url(container.upload_blob_url()), "uploading the config",
                                  headers={"Content-Length": "0"})
            self._accepted(start, "uploading the config")
            location = self._oras._get_location(start, container)
            url = _lib().oras.utils.append_url_params(location, {"digest": digest})
            self._accepted(self._request("PUT", url, "uploading the config", data=EMPTY_BLOB,
                                         headers={"Content-Type": "application/octet-stream"}),
                           "uploading the config")
        return {"mediaType": EMPTY_TYPE, "digest": digest, "size": len(EMPTY_BLOB)}

    def push_manifest(self, repo: str, tag: str, document: dict[str, Any]) -> str:
        """Put ``manifest`` under ``repo:tag``; the digest of the bytes sent."""
        body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        url = self._url(self._container(repo).manifest_url(tag))
        response = self._request("PUT", url, f"tagging {repo}:{tag}", data=body,
                                 headers={"Content-Type": MANIFEST_TYPE})
        self._accepted(response, f"tagging {repo}:{tag}")
        answered = response.headers.get("Docker-Content-Digest")
        if answered and answered != digest:
            raise ArtifactRefused(f"the registry stored {repo}:{tag} as {answered}, not {digest}",
                                  "check the registry")
        return digest

    def _accepted(self, response: requests.Response, what: str) -> None:
        if response.status_code in (401, 403):
            raise self._denied(what)
        if response.status_code not in (200, 201, 202, 204):
            detail = _error_message(response)
            raise RegistryUnreachable(f"registry {self.address} answered HTTP {response.status_code} "
                                      f"while {what}{f': {detail}' if detail else ''}",
                                      "read the registry's log")


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            hasher.update(block)
    return hasher.hexdigest()


def _reason(error: BaseException) -> str:
    """A short reason for a connection error, without URLs (they may carry credentials)."""
    text = str(error)
    for known in ("Connection refused", "timed out", "Name or service not known",
                  "Temporary failure in name resolution", "Connection reset", "IncompleteRead",
                  "Connection broken", "No route to host"):
        if known.lower() in text.lower():
            return known.lower()
    return type(error).__name__


def _error_message(response: requests.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        return "; ".join(str(e.get("message", "")) for e in errors if isinstance(e, dict))[:200]
    except (ValueError, AttributeError):
        return ""


def elapsed(start: float) -> float:
    return round(time.monotonic() - start, 1)
