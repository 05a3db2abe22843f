//! The dashboard's files, embedded in the binary (no CDN, no build step): plain HTML, CSS and
//! JavaScript that builds its DOM with `textContent` and `createElement` only.

pub(crate) const INDEX_HTML: &str = include_str!("assets/index.html");
pub(crate) const APP_JS: &str = include_str!("assets/app.js");
pub(crate) const GRAPH_JS: &str = include_str!("assets/graph.js");
pub(crate) const FORM_JS: &str = include_str!("assets/form.js");
pub(crate) const STYLE_CSS: &str = include_str!("assets/style.css");
pub(crate) const FAVICON_SVG: &str = include_str!("assets/favicon.svg");
const LOGIN_HTML: &str = include_str!("assets/login.html");

/// The login page, with the "wrong token" notice shown or not (nothing from the request is
/// ever written into it).
pub(crate) fn login_page(failed: bool) -> String {
    let notice = if failed {
        r#"<p class="notice" role="alert">That token is not right.</p>"#
    } else {
        ""
    };
    LOGIN_HTML.replace("<!--NOTICE-->", notice)
}
