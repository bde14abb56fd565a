"""The Textual dashboard, the Harlequin way: one worker owns the sockets and posts messages;
`@on` handlers apply them to the plain state model; screens repaint from the model on a timer,
updating cells in place. Bursts coalesce (`FeedReady.can_replace`, as Toolong does)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.dom import DOMNode
from textual.message import Message
from textual.screen import ModalScreen, Screen

from fpmon import themes
from fpmon.errors import FpmonError
from fpmon.monitor.config import MonitorConfig
from fpmon.monitor.feed import EndpointState, Feed, Inbox, Player, Position, Rejected, Reset
from fpmon.monitor.model import FleetModel, VerdictEntry
from fpmon.monitor.screens.alerts import AlertsScreen
from fpmon.monitor.screens.base import LiveScreen
from fpmon.monitor.screens.capacity import CapacityScreen
from fpmon.monitor.screens.evidence import EvidenceScreen
from fpmon.monitor.screens.fleet import FleetScreen
from fpmon.monitor.screens.modals import ColumnsScreen, HelpScreen
from fpmon.monitor.screens.verdicts import VerdictsScreen
from fpmon.monitor.widgets.live_table import LiveTable
from fpmon.wire import Message as WireMessage
from fpmon.wire import Verdict


class FeedReady(Message):
    """The worker put messages in the inbox. Pending ones collapse into one: drain once."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, FeedReady)


class NodeAppeared(Message):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node


class NodeFlagged(Message):
    """A node's health turned `flagged`: the attribution says which setup field differs."""

    def __init__(self, node: str, attribution: str) -> None:
        super().__init__()
        self.node = node
        self.attribution = attribution


class MonitorApp(App):
    CSS_PATH = "monitor.tcss"
    TITLE = "fpmon"
    MODES: ClassVar[dict[str, str | Callable[[], Screen]]] = {
        "fleet": FleetScreen,
        "verdicts": VerdictsScreen,
        "alerts": AlertsScreen,
    }
    DEFAULT_MODE = "fleet"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "switch_mode('fleet')", "Fleet", id="fleet"),
        Binding("2", "switch_mode('verdicts')", "Verdicts", id="verdicts"),
        Binding("3", "switch_mode('alerts')", "Alerts", id="alerts"),
        Binding("t", "next_theme", "Theme", id="theme"),
        Binding("question_mark", "help", "Help", id="help"),
        Binding("space", "play_pause", "Play/pause", show=False, id="play.pause"),
        Binding("left_square_bracket", "seek(-10)", "-10 s", show=False, id="play.back"),
        Binding("right_square_bracket", "seek(10)", "+10 s", show=False, id="play.forward"),
        Binding("q", "quit", "Quit", id="quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True, id="quit.ctrl_c"),
    ]

    def __init__(
        self,
        config: MonitorConfig,
        *,
        play: str | None = None,
        model: FleetModel | None = None,
        export_dir: str | Path | None = None,
        start_feed: bool = True,
        problems: Callable[[], list[str]] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.model = model or FleetModel(config.limits)
        self.inbox = Inbox(notify=self._feed_notify)
        self.inspector = config.monitor.inspector
        # Where `x` writes: the argument, [monitor] export_dir, or a fixed folder (never the
        # working directory by surprise); the notification names the absolute path.
        self.export_dir = Path(export_dir or config.monitor.export_dir or default_export_dir())
        self.start_feed = start_feed
        self.problems = problems  # the demo's children that died, said once each in the UI
        self.source: Feed | Player | None = None
        self.position: Position | None = None
        self._dirty: dict[str, set[str]] = {"fleet": set()}
        self._health: dict[str, str] = {}
        self._last_tick = 0.0
        self.palette: dict[str, str] = {}
        self._theme_names = [t.name for t in themes.load_all()]
        for t in themes.load_all():
            self.register_theme(t)
        if config.monitor.theme not in self._theme_names:
            themes.load_theme(config.monitor.theme)  # raises FpmonError naming the themes there are
        self.theme = config.monitor.theme
        if config.keymap:
            check_keymap(config.keymap)
            self.set_keymap(config.keymap)
        if play:
            self.source = Player(self.inbox, play, verifier_key=config.monitor.verifier_key)
        elif start_feed and (config.monitor.endpoints or config.monitor.state):
            self.source = Feed(
                self.inbox,
                config.monitor.endpoints,
                config.monitor.state,
                curve=config.curve,
                record=config.monitor.record,
                state_timeout_s=config.monitor.state_timeout_s,
                state_refresh_s=config.monitor.state_refresh_s,
                deaf_after_s=config.monitor.deaf_after_s,
                verifier_key=config.monitor.verifier_key,
            )
        self.sub_title = self._subtitle()

    # -- lifecycle -----------------------------------------------------------------------
    def on_mount(self) -> None:
        self._palette()
        if self.source is not None and self.config.monitor.verifier_key is None:
            self.notify(
                "no [monitor] verifier_key: verdicts and alerts are shown unauthenticated",
                severity="warning",
                timeout=30,
            )
        if self.source is not None:
            self.run_worker(self.source.run, name="feed", thread=True, exit_on_error=False)
        self.set_interval(self.config.monitor.refresh_s, self.repaint)

    def on_unmount(self) -> None:
        if self.source is not None:
            self.source.stopping.set()

    def _subtitle(self) -> str:
        parts = []
        if isinstance(self.source, Player):
            p = self.position
            at = f"{p.at:.0f}/{p.length:.0f} s{' paused' if p.paused else ''}" if p else ""
            parts.append(f"playback {at} ([ ] seek, space pause)")
        if self.inspector:
            parts.append("read-only inspector")
        return " │ ".join(parts) or "live"

    # -- feed ----------------------------------------------------------------------------
    def _feed_notify(self) -> None:
        self.post_message(FeedReady())

    @on(FeedReady)
    def drain_feed(self) -> None:
        model = self.model
        touched: set[str] = set()
        now = model.clock()
        for item in self.inbox.drain():
            if isinstance(item, WireMessage):
                model.apply(item, now)
                if isinstance(item, Verdict):
                    touched.add(item.node)
            elif isinstance(item, EndpointState):
                if item.state == "lost" and model.endpoints.get(item.endpoint) != "lost":
                    self.notify(
                        f"{item.endpoint} is unreachable; retrying by itself",
                        severity="warning",
                    )
                elif item.state == "deaf" and model.endpoints.get(item.endpoint) != "deaf":
                    self.notify(
                        f"heard nothing from {item.endpoint} for "
                        f"{self.config.monitor.deaf_after_s:g} s; resubscribed",
                        severity="error",
                    )
                model.set_endpoint(item.endpoint, item.state)
            elif isinstance(item, Rejected):
                model.rejected[item.reason] += 1
            elif isinstance(item, Position):
                self.position = item
                self.sub_title = self._subtitle()
            elif isinstance(item, Reset):
                self.model = model = FleetModel(self.config.limits)
                self._health.clear()
                self._rebuild_screens()
        for node in model.nodes.keys() - self._health.keys():
            self._health[node] = "pending"
            self.post_message(NodeAppeared(node))
        for node in touched:
            row = model.nodes.get(node)
            if row is None:
                continue
            h = row.health
            if h == "flagged" and self._health.get(node) != "flagged":
                self.post_message(NodeFlagged(node, row.last_attribution))
            self._health[node] = h

    def take_dirty(self, view: str) -> set[str]:
        d = self._dirty[view]
        self._dirty[view] = set()
        return d

    def repaint(self) -> None:
        now = self.model.clock()
        if now - self._last_tick >= 1.0:
            self.model.tick(now)
            self._last_tick = now
        dirty = self.model.take_dirty()
        for d in self._dirty.values():
            d |= dirty
        screen = self.live_screen()
        if screen is not None:
            screen.repaint()
        else:  # a full screen with live figures; the stack is empty while the app exits
            top = self.screen_stack[-1] if self.screen_stack else None
            if isinstance(top, CapacityScreen):
                top.repaint()
        if self.problems is not None:
            for p in self.problems():
                self.notify(p, severity="error", timeout=30)

    def live_screen(self) -> LiveScreen | None:
        """The live screen the operator sees: the top one, or the one under a dialog (help,
        columns), which keeps updating behind it. None under a full screen (evidence)."""
        for s in reversed(self.screen_stack):
            if isinstance(s, LiveScreen):
                return s
            if not isinstance(s, ModalScreen):
                return None
        return None

    def _rebuild_screens(self) -> None:
        for screen in self._live_screens():
            screen.rebuild()

    def _live_screens(self) -> Iterable[LiveScreen]:
        for stack in self._screen_stacks.values():
            for s in stack:
                if isinstance(s, LiveScreen) and s.is_mounted:
                    yield s

    # -- themes --------------------------------------------------------------------------
    def _palette(self) -> None:
        v = self.get_css_variables()
        self.palette = {k: v[k] for k in v if k.startswith("fpmon-")}

    def watch_theme(self, theme: str) -> None:
        # Also runs from __init__ (which sets the configured theme), before any screen: the
        # palette is ready from the start and there is nothing to repaint yet.
        self._palette()
        for screen in self._live_screens():
            screen.table.palette = self.palette
            screen.table.repaint_all()
            screen.repaint(full=True)

    def action_next_theme(self) -> None:
        names = self._theme_names
        i = names.index(self.theme) + 1 if self.theme in names else 0
        self.theme = names[i % len(names)]
        self.notify(f"theme: {self.theme}")

    # -- screens -------------------------------------------------------------------------
    def show_evidence(self, entry: VerdictEntry) -> None:
        self.push_screen(EvidenceScreen(entry))

    def show_capacity(self, node: str) -> None:
        if node not in self.model.nodes:
            self.notify(f"{node} is not in the fleet view", severity="warning")
            return
        self.push_screen(CapacityScreen(node))

    def action_help(self) -> None:
        self.push_screen(HelpScreen(help_rows(self)))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Fleet", "Show the fleet", lambda: self.switch_mode("fleet"))
        yield SystemCommand(
            "Verdicts", "Show the verdict feed", lambda: self.switch_mode("verdicts")
        )
        yield SystemCommand(
            "Alerts", "Show and acknowledge alerts", lambda: self.switch_mode("alerts")
        )
        yield SystemCommand("Keys", "Every key binding and its id", self.action_help)
        for name in self._theme_names:
            yield SystemCommand(
                f"Theme: {name}",
                "Switch the dashboard theme",
                lambda n=name: setattr(self, "theme", n),
            )

    # -- playback ------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in ("play_pause", "seek"):
            return isinstance(self.source, Player)
        return True

    def action_play_pause(self) -> None:
        if isinstance(self.source, Player):
            self.source.toggle_pause()

    def action_seek(self, delta: float) -> None:
        if isinstance(self.source, Player):
            self.source.seek_by(delta)


def default_export_dir() -> Path:
    """`$XDG_DATA_HOME/fpmon/exports` (~/.local/share/fpmon/exports)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "fpmon" / "exports"


def tune_gc() -> None:
    """Keep the garbage collector's full passes out of the repaint path (the CLI calls this).

    A live fleet keeps ~100k objects churning through the oldest generation (verdict feed,
    table cells); CPython's full collection over them took 100-300 ms every ~2 s here
    (bench/monitor_load.py), which is the whole repaint budget. Startup objects (modules,
    Textual's classes) are frozen out of collection, and a full pass waits for 1,000 young
    ones instead of 10: still every few minutes, so cyclic garbage stays bounded, while most
    garbage is freed at once by reference counting anyway.
    """
    import gc

    gc.collect()
    gc.freeze()
    t0, t1, _ = gc.get_threshold()
    gc.set_threshold(t0, t1, 1000)


# Every class that declares bindings, for the help screen and keymap validation.
BINDING_CLASSES: tuple[type[DOMNode], ...] = (
    MonitorApp, LiveScreen, FleetScreen, VerdictsScreen, AlertsScreen, EvidenceScreen,
    CapacityScreen, HelpScreen, ColumnsScreen, LiveTable,
)  # fmt: skip


def binding_ids() -> dict[str, Binding]:
    out: dict[str, Binding] = {}
    for cls in BINDING_CLASSES:
        for b in cls.BINDINGS:
            if isinstance(b, Binding) and b.id:
                out.setdefault(b.id, b)
    return out


def check_keymap(keymap: Mapping[str, str]) -> None:
    known = binding_ids()
    unknown = sorted(set(keymap) - set(known))
    if unknown:
        raise FpmonError(
            f"[keymap]: unknown binding id(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )


# Where each class's bindings apply, for the help screen.
BINDING_PLACES: dict[type, str] = {
    MonitorApp: "anywhere", LiveScreen: "fleet, verdicts, alerts", LiveTable: "any table",
    FleetScreen: "fleet", VerdictsScreen: "verdicts", AlertsScreen: "alerts",
    EvidenceScreen: "evidence", CapacityScreen: "capacity", HelpScreen: "this help",
    ColumnsScreen: "columns dialog",
}  # fmt: skip


def key_display(app: App, keys: str) -> str:
    """Keys as a person types them: `?` and `[`, not `question_mark`; `esc / q`."""
    out = []
    for k in keys.split(","):
        k = k.strip()
        out.append(app.get_key_display(Binding(k, "")) if k else k)
    return " / ".join(out)


def help_rows(app: App) -> list[tuple[str, str, str, str]]:
    """(keys, what it does, where, binding id) for every binding this session can use:
    playback keys only when playing a recording, acknowledge/export not in inspector mode."""
    keymap = app._keymap if hasattr(app, "_keymap") else {}
    playing = isinstance(getattr(app, "source", None), Player)
    inspector = bool(getattr(app, "inspector", False))
    rows: dict[str, list[str]] = {}  # one row per id; a binding on two screens names both
    for cls in BINDING_CLASSES:
        for b in cls.BINDINGS:
            if not isinstance(b, Binding) or not b.id:
                continue
            if b.id in rows:
                rows[b.id][2] += f", {BINDING_PLACES.get(cls, '')}"
                continue
            if b.id.startswith("play.") and not playing:
                continue
            if inspector and b.id in ("alerts.ack", "alerts.ack_all", "verdicts.export"):
                continue
            key = key_display(app, keymap.get(b.id, b.key))
            rows[b.id] = [key, b.description or b.action, BINDING_PLACES.get(cls, ""), b.id]
    return [(k, what, where, bid) for k, what, where, bid in rows.values()]
