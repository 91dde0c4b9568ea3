// leadflow embedded form, served by GET /f/{form}/embed.js (the form key is filled in).
(function () {
  "use strict";
  var FORM = __FORM_KEY__;
  var script = document.currentScript;
  var base = script ? new URL(script.src).origin : "";
  function anonymousId() {
    try {
      if (window.analytics && analytics.user) { return analytics.user().anonymousId(); }
    } catch (e) {}
    var m = document.cookie.match(/(?:^|;\s*)ajs_anonymous_id=([^;]+)/);
    if (!m) { return ""; }
    return decodeURIComponent(m[1]).replace(/^"|"$/g, "");
  }
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text != null) { node.textContent = text; }
    return node;
  }
  function safeHref(url) {
    return /^(https?:\/\/|\/(?![\/\\]))/.test(url) ? url : "#";
  }
  var host = document.getElementById("leadflow-form-" + FORM);
  if (!host) {
    host = el("div", {id: "leadflow-form-" + FORM});
    if (script && script.parentNode) { script.parentNode.insertBefore(host, script.nextSibling); }
    else { document.body.appendChild(host); }
  }
  if (!document.querySelector("link[data-leadflow-forms]")) {
    var css = el("link", {rel: "stylesheet", href: base + "/static/css/forms.css", "data-leadflow-forms": "1"});
    document.head.appendChild(css);
  }
  var lang = host.getAttribute("data-lang") || "";
  var q = "?anonymousId=" + encodeURIComponent(anonymousId()) +
          "&pageUrl=" + encodeURIComponent(location.href) + (lang ? "&lang=" + encodeURIComponent(lang) : "");
  function done(box, text, asset) {
    box.textContent = "";
    var d = el("div", {"class": "lf-done", role: "status"});
    d.appendChild(el("h2", null, text.thanks));
    if (asset) {
      d.appendChild(el("p", null, text.ready));
      d.appendChild(el("a", {"class": "lf-button", href: safeHref(asset.url), rel: "noopener"}, text.open + " " + asset.title));
    } else { d.appendChild(el("p", null, text.received)); }
    box.appendChild(d);
  }
  fetch(base + "/f/" + encodeURIComponent(FORM) + "/embed.json" + q, {credentials: "omit"})
    .then(function (r) { return r.json(); })
    .then(function (cfg) {
      var box = el("div", {"class": "lf-embed"});
      host.textContent = "";
      host.appendChild(box);
      if (cfg.skip) {
        var a = el("a", {"class": "lf-button", href: safeHref(cfg.asset.url), rel: "noopener"}, cfg.asset.title);
        box.appendChild(a);
        return;
      }
      box.appendChild(el("h3", {"class": "lf-title"}, cfg.title));
      var form = el("form", {"class": "lf-form", novalidate: "novalidate"});
      var hidden = {lf_token: cfg.token, anonymous_id: cfg.anonymousId, lang: cfg.lang, page_url: location.href};
      var errors = {};
      cfg.fields.forEach(function (f) {
        var wrap = el("div", {"class": "lf-field"});
        var id = "lf-" + FORM + "-" + f.name;
        var input;
        if (f.type === "select") {
          input = el("select", {id: id, name: f.name});
          input.appendChild(el("option", {value: ""}, "—"));
          f.options.forEach(function (o) { input.appendChild(el("option", {value: o}, o)); });
        } else if (f.type === "textarea") {
          input = el("textarea", {id: id, name: f.name, rows: "4", maxlength: String(f.max_length)});
        } else if (f.type === "checkbox") {
          input = el("input", {id: id, name: f.name, type: "checkbox", value: "on"});
        } else {
          var t = {email: "email", tel: "tel", number: "number"}[f.type] || "text";
          input = el("input", {id: id, name: f.name, type: t, maxlength: String(f.max_length)});
        }
        if (f.required) { input.setAttribute("required", "required"); }
        wrap.appendChild(el("label", {"for": id}, f.label + (f.required ? " *" : "")));
        wrap.appendChild(input);
        var err = el("p", {"class": "lf-error"});
        wrap.appendChild(err);
        errors[f.name] = err;
        form.appendChild(wrap);
      });
      if (cfg.consent) {
        var c = el("div", {"class": "lf-field lf-consent"});
        var lab = el("label", {"class": "lf-check-label"});
        lab.appendChild(el("input", {type: "checkbox", name: "consent", value: "on"}));
        lab.appendChild(el("span", null, cfg.consent.text + (cfg.consent.required ? " *" : "")));
        c.appendChild(lab);
        var cerr = el("p", {"class": "lf-error"});
        c.appendChild(cerr);
        errors.consent = cerr;
        form.appendChild(c);
      }
      var hp = el("div", {"class": "lf-hp", "aria-hidden": "true"});
      hp.appendChild(el("input", {type: "text", name: "lf_website", tabindex: "-1", autocomplete: "off"}));
      form.appendChild(hp);
      form.appendChild(el("button", {"class": "lf-button", type: "submit"}, cfg.text.submit));
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var body = new URLSearchParams(new FormData(form));
        Object.keys(hidden).forEach(function (k) { body.set(k, hidden[k]); });
        fetch(base + cfg.action, {method: "POST", body: body, credentials: "omit",
                                   headers: {"Accept": "application/json"}})
          .then(function (r) { return r.json(); })
          .then(function (res) {
            Object.keys(errors).forEach(function (k) { errors[k].textContent = ""; });
            if (res.success) {
              done(box, cfg.text, res.asset);
              return;
            }
            Object.keys(res.errors || {}).forEach(function (k) {
              if (errors[k]) { errors[k].textContent = res.errors[k]; }
            });
          });
      });
      box.appendChild(form);
    });
})();
