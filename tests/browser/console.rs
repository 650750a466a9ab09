//! The console's pages as a person uses them, in headless Chromium.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let Some(tools) = Tools::find() else {
        return;
    };
    let env = Env::seeded(5).await;
    let service = serve(&env).await;
    let api = Api::new(&service);
    let _waiting = make_runs(&api).await;
    let base = format!("http://{}", service.addr());

    let driver = Chromedriver::start(&tools);
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.session(&tools, profile.path()).await;
    let screens = Screens::new();

    // The admin signs in through the form and lands on the runs page.
    login(&browser, &base, API_TOKEN).await;
    assert_eq!(browser.current_url().await.unwrap().path(), "/runs");
    screens.save(&browser, "runs").await;

    browser.close().await.unwrap();
}
