"""Keep-alive after a refused request whose body arrives after its headers.

urllib3 2.x (under requests, the client of the DMTF validators and sushy) writes a request's
headers and its body with separate sends (urllib3/connection.py, HTTPConnection.request:
endheaders(), then send(chunk) per body chunk). On a busy machine the server may answer
before the body has arrived. This drives the same order with http.client, the class urllib3
builds on, and a pause between the two writes so the order is certain, then sends the next
request on the same connection, as the Protocol Validator does (a POST of an account, then
DELETE /redfish/v1/). Prints the two statuses as JSON, or the error the second one got.

usage: keep_alive_after_refusal.py HOST PORT USER PASSWORD
"""
import base64
import http.client
import json
import ssl
import sys
import time

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
connection = http.client.HTTPSConnection(host, port, context=context, timeout=60)
authorization = 'Basic ' + base64.b64encode(f'{user}:{password}'.encode()).decode()
body = json.dumps({'UserName': 'rfpv0001', 'Password': 'Aa1.bcdefghijklm',
                   'RoleId': 'ReadOnly'}).encode()

connection.putrequest('POST', '/redfish/v1/AccountService/Accounts')
connection.putheader('Authorization', authorization)
connection.putheader('Content-Type', 'application/json')
connection.putheader('Content-Length', str(len(body)))
connection.endheaders()
time.sleep(0.5)
connection.send(body)
first = connection.getresponse()
first.read()

try:
    connection.request('DELETE', '/redfish/v1/', headers={'Authorization': authorization})
    second = connection.getresponse()
    second.read()
    print(json.dumps({'first': first.status,
                      'first_connection': first.getheader('Connection'),
                      'second': second.status}))
except (OSError, http.client.HTTPException) as error:
    print(json.dumps({'first': first.status,
                      'first_connection': first.getheader('Connection'),
                      'second_error': type(error).__name__}))
