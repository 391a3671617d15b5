// A table wider than the window scrolls sideways inside its frame: say so, and fade the cut edge, since a column
// cut off at the frame's edge gives no cue that more follow.
"use strict";

(() => {
  function mark(frame, hint) {
    const more = frame.scrollWidth > frame.clientWidth + 1;
    frame.classList.toggle("more-right", more && frame.scrollLeft + frame.clientWidth < frame.scrollWidth - 1);
    hint.hidden = !more;
    if (more) frame.tabIndex = 0;  // keyboard users scroll it with the arrow keys
    else frame.removeAttribute("tabindex");
  }

  document.querySelectorAll(".table-wrap").forEach((frame, i) => {
    const hint = document.createElement("p");
    hint.className = "scroll-hint"; hint.id = `scroll-hint-${i}`; hint.hidden = true;
    hint.textContent = "This table is wider than the window: scroll it sideways for the other columns →";
    frame.before(hint);
    frame.setAttribute("aria-describedby", hint.id);
    const update = () => mark(frame, hint);
    frame.addEventListener("scroll", update, { passive: true });
    const observer = new ResizeObserver(update);
    observer.observe(frame);
    if (frame.firstElementChild) observer.observe(frame.firstElementChild);
  });
})();
