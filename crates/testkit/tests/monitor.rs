//! `Monitor` counts the app's round trips only: Sentinel's own traffic to a
//! server it watches (a PING every second, INFO, hellos), and the stream a
//! replica receives from its master, are left out.

use std::time::Duration;

use testkit::SentinelGroup;

#[test]
fn sentinel_traffic_is_not_counted_but_a_client_command_is() {
    let group = SentinelGroup::start();
    for server in [&group.master, &group.replica] {
        let mut monitor = server.monitor();
        let start = monitor.begin();
        // Sentinel pings every instance it watches once a second.
        std::thread::sleep(Duration::from_millis(2_500));
        let seen = monitor.commands_since(start);
        assert!(seen.is_empty(), "nothing but Sentinel ran: {seen:?}");
        let start = monitor.begin();
        let _: Option<String> = testkit::redis::cmd("GET")
            .arg("any-key")
            .query(&mut server.connection())
            .expect("GET");
        std::thread::sleep(Duration::from_millis(1_500));
        assert_eq!(monitor.commands_since(start), ["get"]);
    }
}
