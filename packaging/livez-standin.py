"""A stand-in for kube-apiserver's /livez on 127.0.0.1, over TLS, for
packaging/test-ansible.sh. Records every request in EVENTS so the test can
check the rollout's order.

  /livez                      200 "ok"
  /livez-fails-after-start    200 "ok" until DOWN_MARKER exists, then 500,
                              as an apiserver that does not come back.

usage: livez-standin.py CERT KEY EVENTS DOWN_MARKER PORT_FILE
"""
import http.server
import os
import ssl
import sys

cert, key, events, down_marker, port_file = sys.argv[1:6]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(events, "a") as f:
            f.write(f"livez {self.path}\n")
        live = self.path == "/livez" or (
            self.path == "/livez-fails-after-start" and not os.path.exists(down_marker)
        )
        body = b"ok" if live else b"[-]ping failed: reason withheld\nlivez check failed\n"
        self.send_response(200 if live else 500)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
with open(port_file + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(port_file + ".tmp", port_file)
srv.serve_forever()
