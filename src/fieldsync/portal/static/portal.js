// fieldsync maker portal: progressive enhancement only; every page works without it.
(function () {
  "use strict";

  // In an item's form, show the settings of the chosen download filter only.
  function syncFilter(form) {
    var chosen = form.querySelector('input[name="filter"]:checked');
    var value = chosen ? chosen.value : "";
    form.querySelectorAll("[data-show-for]").forEach(function (el) {
      el.hidden = el.getAttribute("data-show-for") !== value;
    });
  }
  document.querySelectorAll("form[data-item]").forEach(function (form) {
    syncFilter(form);
    form.addEventListener("change", function (event) {
      if (event.target.name === "filter") { syncFilter(form); }
    });
  });

  // Forms that change at once when a box is ticked (the Save button stays for keyboards).
  document.querySelectorAll("form[data-autosubmit]").forEach(function (form) {
    form.addEventListener("change", function () { form.requestSubmit(); });
  });

  // Ask before destructive actions.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });

  // After a refused save, bring the first message into view.
  var problem = document.querySelector('[role="alert"]');
  if (problem && problem.scrollIntoView) { problem.scrollIntoView({ block: "center" }); }
})();
