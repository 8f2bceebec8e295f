"""Send N requests over one keep-alive connection, and check each is 200.

    python3 scripts/bench/send_requests.py http://127.0.0.1:8080/count 2000 [cookies.txt [JSON]]

With a cookie file (one "sid=<value>" per line, as make_sessions.py prints),
the requests take the cookies in turn; without one (or with ""), they send
no cookie. With a JSON body they are POSTs of it, else GETs; a "{n}" in
the body becomes the request's number (a new user for each login).
One connection, one request at a time: what instructions.sh needs, so that
every request costs the same work, with no batching and no idle polling.
"""
import http.client
import sys
import urllib.parse


def main() -> None:
    url, count = urllib.parse.urlsplit(sys.argv[1]), int(sys.argv[2])
    cookies = []
    if len(sys.argv) > 3 and sys.argv[3]:
        with open(sys.argv[3], encoding="ascii") as lines:
            cookies = [line.strip() for line in lines if line.strip()]
    body = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else None
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    for i in range(count):
        headers = {"Cookie": cookies[i % len(cookies)]} if cookies else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
            connection.request("POST", url.path, body=body.replace("{n}", str(i)), headers=headers)
        else:
            connection.request("GET", url.path, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            sys.exit(f"{url.geturl()} answered {response.status}")


if __name__ == "__main__":
    main()
