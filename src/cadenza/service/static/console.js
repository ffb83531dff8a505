// The console's own progressive enhancement, on top of htmx: a live region stops
// refreshing while the operator has something open in it (an operation's detail, the
// history, a past state document), so a refresh never takes away what they are reading.
function cadenzaReading(element) {
  return element && element.id === "run" && element.querySelector("details[open], [data-reading]") !== null;
}
document.addEventListener("htmx:beforeRequest", function (event) {
  if (cadenzaReading(event.detail.elt)) {
    event.preventDefault();
  }
});
// A refresh already under way when a row was opened is dropped rather than swapped in.
document.addEventListener("htmx:beforeSwap", function (event) {
  if (cadenzaReading(event.detail.elt)) {
    event.detail.shouldSwap = false;
  }
});
