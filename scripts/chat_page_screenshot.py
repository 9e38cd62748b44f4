#!/usr/bin/env python3
"""Uses the chat page of a running `pivot serve` as a person would, in headless Chromium, and
saves a screenshot: loads /, types two messages (Enter to send), waits for each streamed reply.

    pip install websocket-client; apt-get install chromium
    python3 scripts/chat_page_screenshot.py [--url http://127.0.0.1:8080/] [--out chat.png]
"""
import argparse, base64, json, subprocess, tempfile, time, urllib.request

import websocket

parser = argparse.ArgumentParser()
parser.add_argument("--url", default="http://127.0.0.1:8080/")
parser.add_argument("--out", default="chat.png")
parser.add_argument("--messages", nargs="*", default=["What is the capital of France?", "Write a haiku about the sea."])
args = parser.parse_args()

profile = tempfile.mkdtemp()
browser = subprocess.Popen(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=9333",
                            f"--user-data-dir={profile}", "--window-size=900,700", "about:blank"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(100):
        try:
            targets = json.load(urllib.request.urlopen("http://127.0.0.1:9333/json"))
            page = next(t for t in targets if t["type"] == "page")
            break
        except Exception:
            time.sleep(0.1)
    ws = websocket.create_connection(page["webSocketDebuggerUrl"])
    counter = [0]

    def call(method, **params):
        counter[0] += 1
        ws.send(json.dumps({"id": counter[0], "method": method, "params": params}))
        while True:
            reply = json.loads(ws.recv())
            if reply.get("id") == counter[0]:
                return reply.get("result", {})

    def js(expression):
        return call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True).get("result", {}).get("value")

    call("Emulation.setDeviceMetricsOverride", width=900, height=700, deviceScaleFactor=1, mobile=False)
    call("Page.navigate", url=args.url)
    time.sleep(1.5)
    for message in args.messages:
        js(f"document.getElementById('input').value = {json.dumps(message)}; "
           "document.getElementById('input').dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true}));")
        for _ in range(600):
            time.sleep(0.1)
            if js("document.getElementById('send').disabled") is False:
                break
    print("model line:", js("document.getElementById('model').textContent"))
    print("speed line:", js("document.getElementById('speed').textContent"))
    print("bubbles:", js("Array.from(document.querySelectorAll('.msg')).map(d => d.className + ': ' + d.textContent)"))
    shot = call("Page.captureScreenshot", format="png")
    open(args.out, "wb").write(base64.b64decode(shot["data"]))
    print("saved", args.out)
finally:
    browser.terminate()
