// Typeset every arithmatex span/div with the KaTeX copy shipped in docs/assets (no network).
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll(".arithmatex").forEach(function (el) {
    var tex = el.textContent.trim();
    var display = tex.startsWith("\\[");
    tex = tex.replace(/^\\[\[(]/, "").replace(/\\[\])]$/, "");
    try {
      katex.render(tex, el, { displayMode: display, throwOnError: false, strict: "ignore" });
    } catch (err) {
      el.classList.add("math-error");
      console.error("KaTeX:", err);
    }
  });
});
