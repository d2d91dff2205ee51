//! The console's WebDriver client against a real headless Chromium: every command the
//! console's tests rely on, and the driver's errors surfacing with the command that failed.

use serde_json::json;
use stratus_testkit::console::Browser;

/// A page with a field, a button that copies the field into a paragraph, and a hidden element.
const PAGE: &str = "data:text/html;charset=utf-8,<!doctype html><title>t</title>\
    <input id=name value=initial data-kind=text>\
    <button id=copy onclick=\"document.getElementById('out').textContent = 'Hello, ' + document.getElementById('name').value\">Copy</button>\
    <p id=out></p><ul><li>one</li><li>two</li><li hidden>three</li></ul>";

#[tokio::test]
async fn every_command_the_console_tests_use() {
    let browser = Browser::start().await;
    let client = browser.client();
    browser.goto(PAGE).await;
    assert!(client.current_url().await.unwrap().starts_with("data:text/html"));

    // Clear, send keys, click, text.
    let name = browser.find("#name").await;
    assert_eq!(name.prop("value").await.unwrap().as_deref(), Some("initial"));
    browser.fill("#name", "Ada").await;
    assert_eq!(name.prop("value").await.unwrap().as_deref(), Some("Ada"));
    browser.click("#copy").await;
    assert_eq!(browser.wait_for_text("#out", "Hello").await, "Hello, Ada");

    // Attributes and properties.
    assert_eq!(name.attr("data-kind").await.unwrap().as_deref(), Some("text"));
    assert_eq!(name.attr("hidden").await.unwrap(), None);
    assert_eq!(name.prop("disabled").await.unwrap().as_deref(), Some("false"));

    // Finding several, inside an element, and what is shown.
    let items = client.find_all("li").await.unwrap();
    assert_eq!(items.len(), 3);
    let mut shown = Vec::new();
    for item in &items {
        shown.push(item.is_displayed().await.unwrap());
    }
    assert_eq!(shown, [true, true, false]);
    let list = browser.find("ul").await;
    assert_eq!(list.find("li").await.unwrap().text().await.unwrap(), "one");
    assert_eq!(list.find_all("li[hidden]").await.unwrap().len(), 1);
    assert!(client.find_all("table").await.unwrap().is_empty());

    // Scripts, with an element as an argument, sync and async.
    let tag = browser.run("return arguments[0].tagName + arguments[1]", vec![list.to_json(), json!(1)]).await;
    assert_eq!(tag, json!("UL1"));
    let later = browser.run_async("const done = arguments[0]; setTimeout(() => done(6 * 7), 10)", vec![]).await;
    assert_eq!(later, json!(42));

    // The driver's errors come back with the command.
    let missing = client.find("#missing").await.expect_err("no element #missing");
    assert_eq!(missing.driver_error(), Some("no such element"));
    let message = missing.to_string();
    assert!(
        message.starts_with(&format!("POST /session/{}/element: no such element", client.session_id())),
        "{message}"
    );
    let thrown = client.execute("throw new Error('boom')", vec![]).await.expect_err("the script throws");
    assert_eq!(thrown.driver_error(), Some("javascript error"));
    assert!(
        thrown.to_string().contains("/execute/sync: javascript error") && thrown.to_string().contains("boom"),
        "{thrown}"
    );

    // Window size and screenshots.
    assert_eq!(browser.run("return [window.outerWidth, window.outerHeight]", vec![]).await, json!([1280, 900]));
    browser.resize(390, 844).await;
    // Headless Chromium keeps its windows at least 500 px wide.
    assert_eq!(browser.run("return [window.outerWidth, window.outerHeight]", vec![]).await, json!([500, 844]));
    let path = browser.screenshot("webdriver-client").await;
    assert!(std::fs::read(&path).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));

    // After the session ends, the driver refuses its commands.
    client.close().await.unwrap();
    let gone = client.current_url().await.expect_err("the session is gone");
    assert_eq!(gone.driver_error(), Some("invalid session id"), "{gone}");
    browser.close().await;
}
