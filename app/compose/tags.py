"""Tag picker: search (Enter adds the first match), chips, and a catalogue browser that stays
folded until asked for: four categories, at most 10 tags per category and MAX_TAGS in all,
clear."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QLineEdit, QListView, QListWidget, QListWidgetItem,
                               QPushButton, QTabWidget, QToolButton, QVBoxLayout, QWidget)

from app.compose.catalogue import MAX_PER_CATEGORY, Category
from app.compose.flow import FlowWidget

BROWSER_HEIGHT = 136
# At most 40 tags (the catalogue's 4 categories x 10, the most it lets one pick), each at most
# 60 characters: 40 x 61 characters is about 700 prompt tokens, well inside the 2,048-token
# super-res prompt (a tag-mode prompt is the tags plus the lyrics), and a chip row stays usable.
MAX_TAGS = 40
MAX_TAG_CHARS = 60


class TagPicker(QWidget):
    changed = Signal()
    message = Signal(str)

    def __init__(self, categories: list[Category], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("tagPicker")
        self.categories = categories
        self._selected: list[str] = []
        self._lists: dict[str, QListWidget] = {}
        self._category_of = {t.lower(): c for c in categories for t in c.tags}
        self._syncing = False
        self.refused = 0  # tags the last set_tags left out for the MAX_TAGS limit

        count = sum(len(c.tags) for c in categories)
        self.search = QLineEdit(placeholderText=f"Search {count} tags — Enter adds the first match")
        self.search.setMaxLength(MAX_TAG_CHARS)
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._filter)
        self.search.returnPressed.connect(self._add_from_search)
        self.browse = QToolButton(text="Browse", checkable=True, objectName="disclosure")
        self.browse.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.browse.setArrowType(Qt.ArrowType.RightArrow)
        self.browse.setToolTip("Show the whole tag catalogue")
        self.browse.toggled.connect(self._update_browser)
        self.clear_button = QPushButton("Clear", objectName="sectionButton")
        self.clear_button.setToolTip("Remove every chosen tag")
        self.clear_button.clicked.connect(lambda: self.set_tags([]))
        top = QHBoxLayout()
        top.setSpacing(6)
        top.addWidget(self.search, 1)
        top.addWidget(self.browse)
        top.addWidget(self.clear_button)

        self.tabs = QTabWidget(objectName="tagCatalogue")
        self.tabs.setDocumentMode(True)
        for cat in categories:
            lst = QListWidget()
            lst.setFlow(QListView.Flow.LeftToRight)
            lst.setWrapping(True)
            lst.setResizeMode(QListView.ResizeMode.Adjust)
            lst.setSpacing(1)
            for tag in cat.tags:
                item = QListWidgetItem(tag)
                item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Unchecked)
                lst.addItem(item)
            lst.itemChanged.connect(lambda item, c=cat: self._on_item(c, item))
            self._lists[cat.key] = lst
            self.tabs.addTab(lst, cat.label)
        self.tabs.setFixedHeight(BROWSER_HEIGHT)
        self.tabs.setVisible(False)

        self.chips = FlowWidget(spacing=4)
        self.empty_chips = QLabel("No tags chosen yet — search above, or Browse the catalogue")
        self.empty_chips.setObjectName("hint")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(6)
        lay.addLayout(top)
        lay.addWidget(self.empty_chips)
        lay.addWidget(self.chips)
        lay.addWidget(self.tabs)
        self._rebuild()

    def sizeHint(self) -> QSize:
        return QSize(360, 60)

    def tags(self) -> list[str]:
        return list(self._selected)

    def category_of(self, tag: str) -> Category | None:
        return self._category_of.get(tag.lower())

    @property
    def browsing(self) -> bool:
        return self.tabs.isVisibleTo(self)

    def set_tags(self, tags: list[str]) -> None:
        """Set the selection (free tags allowed). Over a category's limit, over MAX_TAG_CHARS or
        past MAX_TAGS a tag is left out, with a ``message``; ``refused`` counts the last."""
        chosen: list[str] = []
        self.refused, too_long = 0, []
        for tag in (t.strip() for t in tags):
            if not tag or tag.lower() in (c.lower() for c in chosen):
                continue
            if len(tag) > MAX_TAG_CHARS:
                too_long.append(tag)
            elif len(chosen) >= MAX_TAGS:
                self.refused += 1
            elif self._room_for(tag, chosen):
                chosen.append(tag)
        if too_long:
            self.message.emit(f"A tag is at most {MAX_TAG_CHARS} characters; “{too_long[0][:24]}…”"
                              + (f" and {len(too_long) - 1} more were" if len(too_long) > 1 else " was")
                              + " not added.")
        if self.refused:
            self.message.emit(f"At most {MAX_TAGS} tags; {self.refused} more were not added.")
        if chosen != self._selected:
            self._selected = chosen
            self._rebuild()
            self.changed.emit()

    def _room_for(self, tag: str, chosen: list[str]) -> bool:
        cat = self.category_of(tag)
        if cat is None:
            return True
        if sum(1 for t in chosen if self.category_of(t) is cat) < MAX_PER_CATEGORY:
            return True
        self.message.emit(f"At most {MAX_PER_CATEGORY} {cat.label} tags; remove one to add “{tag}”.")
        return False

    def toggle(self, tag: str) -> None:
        lowered = [t.lower() for t in self._selected]
        if tag.lower() in lowered:
            self.set_tags([t for t in self._selected if t.lower() != tag.lower()])
        else:
            self.set_tags(self._selected + [tag])

    def _on_item(self, cat: Category, item: QListWidgetItem) -> None:
        if self._syncing:
            return
        want = item.checkState() == Qt.CheckState.Checked
        have = item.text().lower() in (t.lower() for t in self._selected)
        if want != have:
            self.toggle(item.text())
        self._rebuild()

    def matches(self, text: str) -> list[str]:
        """Catalogue tags containing ``text``: exact, then prefix, then anywhere (catalogue order
        within each); the browser lists them in this order."""
        needle = text.strip().lower()
        if not needle:
            return []
        hits = [t for c in self.categories for t in c.tags if needle in t.lower()]
        return sorted(hits, key=lambda t: _rank(t, needle))  # stable: catalogue order within a rank

    def first_match(self) -> str | None:
        """The first tag the open browser shows (highlighted): what Enter adds."""
        if not self.search.text().strip():
            return None
        lst = self._lists[self.categories[self.tabs.currentIndex()].key]
        return next((lst.item(r).text() for r in range(lst.count()) if not lst.item(r).isHidden()), None)

    def _add_from_search(self) -> None:
        text = self.search.text().strip()
        if not text:
            return
        tag = self.first_match() or text  # no catalogue match: the typed text is a free tag
        if tag.lower() in (t.lower() for t in self._selected):
            self.message.emit(f"“{tag}” is already chosen.")
        else:
            self.toggle(tag)
        self.search.clear()

    def _update_browser(self) -> None:
        open_ = self.browse.isChecked() or bool(self.search.text().strip())
        self.tabs.setVisible(open_)
        self.browse.setArrowType(Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow)

    def _filter(self, text: str) -> None:
        """Show only the matches, best first, on the tab of the best one, which is highlighted."""
        needle = text.strip().lower()
        best_tab, best_rank = -1, 3
        self._syncing = True
        for i, cat in enumerate(self.categories):
            lst = self._lists[cat.key]
            order = {t: n for n, t in enumerate(cat.tags)}
            items = sorted((lst.takeItem(0) for _ in range(lst.count())),
                           key=lambda it: (_rank(it.text(), needle) if needle else 0, order[it.text()]))
            hits = 0
            for item in items:
                lst.addItem(item)
                hidden = bool(needle) and needle not in item.text().lower()
                item.setHidden(hidden)
                hits += not hidden
            self.tabs.setTabEnabled(i, hits > 0)
            if needle and hits and _rank(items[0].text(), needle) < best_rank:
                best_tab, best_rank = i, _rank(items[0].text(), needle)
        self._syncing = False
        if best_tab >= 0:
            self.tabs.setCurrentIndex(best_tab)
            lst = self._lists[self.categories[best_tab].key]
            lst.setCurrentRow(0)
            lst.scrollToTop()
        self._update_browser()

    def _rebuild(self) -> None:
        self._syncing = True
        selected = {t.lower() for t in self._selected}
        for i, cat in enumerate(self.categories):
            lst = self._lists[cat.key]
            for row in range(lst.count()):
                item = lst.item(row)
                state = Qt.CheckState.Checked if item.text().lower() in selected else Qt.CheckState.Unchecked
                if item.checkState() != state:
                    item.setCheckState(state)
            n = sum(1 for t in self._selected if self.category_of(t) is cat)
            self.tabs.setTabText(i, f"{cat.label} ({n})" if n else cat.label)
        self._syncing = False
        self.chips.clear()
        for tag in self._selected:
            chip = QToolButton()
            chip.setObjectName("chip")
            chip.setText(f"{tag}  ×")
            chip.setToolTip(f"Remove “{tag}”")
            chip.clicked.connect(lambda _=False, t=tag: self.toggle(t))
            self.chips.add_widget(chip)
        self.empty_chips.setVisible(not self._selected)
        self.chips.setVisible(bool(self._selected))
        self.clear_button.setEnabled(bool(self._selected))
        self.chips.updateGeometry()


def _rank(tag: str, needle: str) -> int:
    """0 exact, 1 prefix, 2 anywhere, 3 no match: for sorting matches best first."""
    t = tag.lower()
    return 0 if t == needle else 1 if t.startswith(needle) else 2 if needle in t else 3
