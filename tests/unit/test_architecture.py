"""Which way the imports go (docs/architecture.md), read from the source with `ast`.

A rule broken here is a layering mistake, not a style nit: a store that imports the engine cannot
be reused by a worker process, and a model that imports a provider drags vendor code everywhere.
Imports under `if TYPE_CHECKING:` count too: they are still a dependency a reader must follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package.replace(".", "/")).rglob("*.py"))


def _imports(path: Path) -> list[str]:
    """Every module `path` imports from, absolute names only."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the project uses absolute ones)"
            assert node.module is not None
            found.append(node.module)
    return found


def _violations(package: str, allowed: tuple[str, ...]) -> list[str]:
    """`file: module` for each import of a `daemon.*` module outside `allowed` prefixes."""
    bad: list[str] = []
    for path in _modules(package):
        for module in _imports(path):
            if not (module == "daemon" or module.startswith("daemon.")):
                continue
            if not any(module == a or module.startswith(a + ".") for a in allowed):
                bad.append(f"{path.relative_to(ROOT)}: {module}")
    return bad


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        # The model is the bottom layer: records, states, events, webhook replies.
        ("daemon.model", ("daemon.model", "daemon.errors")),
        # A store backend owns persistence of the model and nothing else.
        ("daemon.store", ("daemon.store", "daemon.model", "daemon.errors", "daemon.paths")),
    ],
)
def test_lower_layers_import_nothing_above_them(package: str, allowed: tuple[str, ...]) -> None:
    assert _violations(package, allowed) == []


def test_nothing_below_the_engine_imports_the_engine() -> None:
    """Providers, stores, media, webhooks and the model are driven by the engine; none calls
    back into it by import (they get narrow callables instead)."""
    bad: list[str] = []
    for package in ("daemon.model", "daemon.store", "daemon.providers"):
        for path in _modules(package):
            bad.extend(
                f"{path.relative_to(ROOT)}: {m}"
                for m in _imports(path)
                if m == "daemon.engine" or m.startswith("daemon.engine.")
            )
    assert bad == []


def _state_writes(path: Path) -> list[int]:
    """Lines that write a `.state` attribute (assignment or `setattr(x, "state", ...)`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    lines: list[int] = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        lines.extend(
            t.lineno for t in targets if isinstance(t, ast.Attribute) and t.attr == "state"
        )
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "setattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value == "state"
        ):
            lines.append(node.lineno)
    return lines


def test_every_call_state_change_goes_through_the_transition_table() -> None:
    """A call's state is written in one place, `CallRecord.move_to`, which asks
    `daemon.model.state.transition`; everything else moves a draft through it.

    `daemon/media` is left out: its `.state` is a playback segment's, not a call's.
    """
    writes = {
        str(path.relative_to(ROOT)): lines
        for path in _modules("daemon")
        if "media" not in path.relative_to(ROOT).parts and (lines := _state_writes(path))
    }
    assert list(writes) == ["daemon/model/record.py"], writes
    assert len(writes["daemon/model/record.py"]) == 1


APP_IMPORTS_ALLOWED: dict[str, str] = {}


def test_parts_the_app_wires_never_import_the_app() -> None:
    """`daemon.app` builds the parts; each part is typed against a narrow host protocol
    (`RpcHost`, `MediaHost`, `WebhookHost`, `ReloadHost`, `ClusterHost`, `SiblingsHost`), never
    the `Daemon`.
    Only process entry points (`__main__.py`) build one."""
    bad = [
        f"{path.relative_to(ROOT)}: {m}"
        for path in _modules("daemon")
        if path.name not in ("app.py", "__main__.py")
        and str(path.relative_to(ROOT)) not in APP_IMPORTS_ALLOWED
        for m in _imports(path)
        if m == "daemon.app"
    ]
    assert bad == []


def _context_variables(path: Path) -> list[int]:
    """Lines that import `contextvars` or name `ContextVar`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def names_it(node: ast.AST) -> bool:
        if isinstance(node, ast.Import):
            return any(alias.name == "contextvars" for alias in node.names)
        if isinstance(node, ast.ImportFrom):
            return node.module == "contextvars"
        if isinstance(node, ast.Name):
            return node.id == "ContextVar"
        return isinstance(node, ast.Attribute) and node.attr == "ContextVar"

    return [getattr(node, "lineno", 0) for node in ast.walk(tree) if names_it(node)]


def test_the_webhook_reply_travels_as_a_value_not_a_context_variable() -> None:
    """The engine's follow-ups reach the answer a provider renders (Twilio TwiML, Plivo XML)
    through the `ReplyDraft` passed to the sink and back to `speak`/`hangup`/...; a context
    variable would be a hidden channel that every task spawned meanwhile inherits."""
    found = {
        str(path.relative_to(ROOT)): lines
        for package in ("daemon.providers", "daemon.engine")
        for path in _modules(package)
        if (lines := _context_variables(path))
    }
    assert found == {}


PROVIDER_NAME_COMPARISONS_ALLOWED: dict[str, str] = {}
"""`path:line` -> why it must compare against a provider's name (none today). A per-provider
decision belongs in its `ProviderSpec` (`daemon/providers/catalog.py`)."""


def _names_a_provider(node: ast.AST, names: frozenset[str]) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value in names
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_names_a_provider(element, names) for element in node.elts)
    return False


def _provider_name_comparisons(path: Path, names: frozenset[str]) -> list[int]:
    """Lines that compare something with a provider's name (`==`, `!=`, `in`, `match`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    lines: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            if any(_names_a_provider(n, names) for n in (node.left, *node.comparators)):
                lines.append(node.lineno)
        elif isinstance(node, ast.MatchValue) and _names_a_provider(node.value, names):
            lines.append(node.value.lineno)
    return lines


def test_no_provider_name_is_compared_outside_the_providers_package() -> None:
    """`if provider == "twilio"` outside `daemon/providers/` is a per-provider decision kept
    out of the provider's declaration: a fifth provider would have to find every such line.
    Declare it in `ProviderSpec` instead and read it (`catalog.spec(name).<field>`)."""
    from daemon.providers import catalog

    names = frozenset(catalog.NAMES)
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for package in ("daemon", "voicecall_cli")
        for path in _modules(package)
        if path.relative_to(ROOT).parts[:2] != ("daemon", "providers")
        for line in _provider_name_comparisons(path, names)
    ]
    assert sorted(set(found) - set(PROVIDER_NAME_COMPARISONS_ALLOWED)) == []
