"""A small element tree of a served page (stdlib html.parser), to assert on elements rather than on substrings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

import httpx

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    children: list[Element | str] = field(default_factory=list)
    parent: Element | None = field(default=None, repr=False)

    def iter(self) -> Iterator[Element]:
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        """Descendants with this tag and these attribute values (``class_`` for class, ``_`` for ``-``)."""
        wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        return [
            e
            for e in self.iter()
            if (tag is None or e.tag == tag) and all(e.attrs.get(k) == v for k, v in wanted.items())
        ]

    def find(self, tag: str | None = None, **attrs: str) -> Element:
        (found,) = self.find_all(tag, **attrs)
        return found

    def by_id(self, element_id: str) -> Element:
        return self.find(id=element_id)

    def has_id(self, element_id: str) -> bool:
        return bool(self.find_all(id=element_id))

    @property
    def raw_text(self) -> str:
        return "".join(c if isinstance(c, str) else c.raw_text for c in self.children)

    @property
    def text(self) -> str:
        """Text content with runs of whitespace collapsed."""
        return " ".join(self.raw_text.split())

    @property
    def classes(self) -> list[str]:
        return (self.attrs.get("class") or "").split()

    @property
    def hidden(self) -> bool:
        return "hidden" in self.attrs


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs), parent=self.stack[-1])
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Element:
    builder = _Builder()
    builder.feed(html)
    builder.close()
    return builder.root


def page(response: httpx.Response, status_code: int = 200) -> Element:
    """The parsed page, after checking that it was served as HTML with this status."""
    assert response.status_code == status_code, response.text
    assert response.headers["content-type"].startswith("text/html")
    return parse(response.text)


def form_state(root: Element) -> dict[str, str]:
    """What a browser submits per named field: "" for an unchecked box, a select's selected (or first) option."""
    state: dict[str, str] = {}
    for element in root.iter():
        name = element.attrs.get("name")
        if name is None or element.tag not in ("input", "select", "textarea"):
            continue
        if element.tag == "textarea":
            state[name] = element.raw_text
        elif element.tag == "select":
            options = element.find_all("option")
            chosen = [o for o in options if "selected" in o.attrs] or options[:1]
            state[name] = chosen[0].attrs.get("value") or "" if chosen else ""
        elif element.attrs.get("type") == "checkbox":
            state[name] = "on" if "checked" in element.attrs else ""
        else:
            state[name] = element.attrs.get("value") or ""
    return state
