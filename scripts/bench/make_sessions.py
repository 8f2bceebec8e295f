"""Create N sessions through a server's GET /count (or, for a URL ending
in /login, N signed-in sessions through POST /login, user bench-<n>) and
print their cookies.

    python3 scripts/bench/make_sessions.py http://127.0.0.1:8080/count 1000 > cookies.txt

Each line is "sid=<value>", as the server set it. One keep-alive connection,
no cookie sent, so every request starts a new session.
"""
import json
import http.client
import sys
import urllib.parse


def main() -> None:
    url, count = urllib.parse.urlsplit(sys.argv[1]), int(sys.argv[2])
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    login = url.path.endswith("/login")
    for n in range(count):
        if login:
            connection.request("POST", url.path, json.dumps({"user": f"bench-{n}"}),
                               {"Content-Type": "application/json"})
        else:
            connection.request("GET", url.path)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            sys.exit(f"{url.geturl()} answered {response.status}")
        cookie = next(
            (v.split(";", 1)[0] for k, v in response.getheaders()
             if k.lower() == "set-cookie" and v.startswith("sid=")),
            None,
        )
        if cookie is None:
            sys.exit(f"{url.geturl()} set no sid cookie")
        print(cookie)


if __name__ == "__main__":
    main()
