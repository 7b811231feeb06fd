//! The Cloudflare Worker face: routes each request to the gate, the management API or the console.

mod admin;
mod gate;
mod reply;
mod store;

use worker::{event, web_sys, Context, Env, Request, Response, Result};

pub(crate) fn now_ms() -> i64 {
    i64::try_from(worker::Date::now().as_millis()).unwrap_or(i64::MAX)
}

/// CSPRNG bytes from the platform (crypto.getRandomValues through getrandom's JS backend).
pub(crate) fn random_bytes<const N: usize>() -> std::result::Result<[u8; N], String> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| e.to_string())?;
    Ok(buf)
}

#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, _ctx: Context) -> Result<Response> {
    // The worker crate reads any method it does not know as GET; refuse those instead.
    let raw_method = req.method();
    let known = worker::Method::all().iter().any(|m| m.as_ref() == raw_method);
    // The URL is parsed once per request and handed on.
    let url = worker::Url::parse(&req.url())?;
    let path = url.path();
    if !known {
        let message = format!("the method {raw_method} is not supported");
        if !path.starts_with("/_keyward/") {
            return reply::error(400, "BAD_REQUEST", &message);
        }
        let allow = match path.strip_prefix("/_keyward/v1/") {
            Some(rest) => admin::allowed_methods(&rest.split('/').collect::<Vec<_>>()),
            None => "GET",
        };
        let response = reply::error(405, "METHOD_NOT_ALLOWED", &message)?;
        response.headers().set("allow", allow)?;
        return Ok(response);
    }
    if path == "/_keyward" || path.starts_with("/_keyward/") {
        if path == "/_keyward/console" {
            let mut url = url.clone();
            url.set_path("/_keyward/console/");
            return Response::redirect(url);
        }
        if let Some(rest) = path.strip_prefix("/_keyward/console/") {
            return console(&Request::from(req), &env, rest).await;
        }
        if let Some(rest) = path.strip_prefix("/_keyward/v1/") {
            return admin::handle(Request::from(req), &env, rest).await;
        }
        return reply::error(404, "NOT_FOUND", "no such keyward endpoint");
    }
    let method = worker::Method::from(raw_method);
    gate::handle(req, method, url, &env).await
}

/// The console's static files (www/), served through the assets binding. The Worker runs first
/// for every path, so assets are reachable only here, never in place of the gate.
async fn console(req: &Request, env: &Env, rest: &str) -> Result<Response> {
    let mut url = req.url()?;
    let file = if rest.is_empty() { "index.html" } else { rest };
    url.set_path(&format!("/{file}"));
    url.set_query(None);
    let response = env.assets("ASSETS")?.fetch(url.to_string(), None).await?;
    if response.status_code() == 404 {
        return reply::error(404, "NOT_FOUND", "no such console file");
    }
    Ok(response)
}
