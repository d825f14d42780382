// azure_device.js — one device driven by the unmodified Azure IoT Hub device SDK
// (azure-iot-device + azure-iot-device-mqtt) against sacgate. Prints one JSON line per event
// so the Python test can follow it:
//   node azure_device.js HOST:PORT DEVICE_ID KEY CA_FILE EVENTS COMMANDS [mqtt|mqttws] [METHODS]
// (mqttws: the SDK's MQTT over WebSocket transport, MqttWs, to wss://HOST:PORT/$iothub/websocket;
// KEY is a SAS key, or x509:CERT_FILE:KEY_FILE)
// sends EVENTS telemetry messages, then waits for COMMANDS cloud-to-device messages, completes
// each, answers METHODS direct method calls (any name: 200 {"method", "got": payload}) through
// onDeviceMethod handlers for 'echo' and 'reboot', and exits 0; exits 1 on any error and 2 after
// 60 s.
'use strict';
const fs = require('fs');
const { Client, Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');

const [host, deviceId, key, ca, events, commands, transport, methodsArg] = process.argv.slice(2);
const methods = Number(methodsArg || 0);
const say = (o) => console.log(JSON.stringify(o));

// MqttWs builds wss://{HostName}:443/$iothub/websocket; the tests' gateways listen on a port the
// kernel picked, given in HostName, so only that ":443" is dropped from the SDK's own URI.
class MqttWsOnPort extends MqttWs {
  _getBaseTransportConfig(credentials) {
    const config = super._getBaseTransportConfig(credentials);
    config.uri = config.uri.replace(`${host}:443/`, `${host}/`);
    return config;
  }
}

// KEY "x509:CERT_FILE:KEY_FILE" makes it an X.509 device (x509=true, the certificate in the handshake).
const Transport = transport === 'mqttws' ? MqttWsOnPort : Mqtt;
let client;
if (key.startsWith('x509:')) {
  const [, certFile, keyFile] = key.split(':');
  client = Client.fromConnectionString(`HostName=${host};DeviceId=${deviceId};x509=true`, Transport);
  client.setOptions({ ca: fs.readFileSync(ca, 'utf8'), cert: fs.readFileSync(certFile, 'utf8'),
                      key: fs.readFileSync(keyFile, 'utf8') });
} else {
  client = Client.fromConnectionString(`HostName=${host};DeviceId=${deviceId};SharedAccessKey=${key}`, Transport);
  client.setOptions({ ca: fs.readFileSync(ca, 'utf8') });
}

let received = 0, answered = 0;
const done = () => {
  if (received >= Number(commands) && answered >= methods) client.close(() => { say({ event: 'closed' }); process.exit(0); });
};
client.on('message', (msg) => {
  say({ event: 'message', messageId: msg.messageId, data: msg.data.toString(),
        properties: msg.properties.propertyList });
  client.complete(msg, (err) => {
    if (err) { say({ event: 'error', where: 'complete', message: err.message }); process.exit(1); }
    say({ event: 'completed', messageId: msg.messageId });
    ++received;
    done();
  });
});
client.on('error', (e) => { say({ event: 'error', where: 'client', message: e.message }); process.exit(1); });

client.open(async (err) => {
  if (err) { say({ event: 'error', where: 'open', message: err.message }); process.exit(1); }
  say({ event: 'open' });
  for (let i = 0; i < Number(events); i++) {
    const m = new Message(JSON.stringify({ seq: i }));
    m.properties.add('seq', String(i));
    m.contentType = 'application/json';
    m.contentEncoding = 'utf-8';
    try {
      await client.sendEvent(m);
    } catch (e) {
      say({ event: 'error', where: 'sendEvent', message: e.message });
      process.exit(1);
    }
  }
  say({ event: 'sent', count: Number(events) });
  if (methods > 0) {
    for (const name of ['echo', 'reboot']) {
      client.onDeviceMethod(name, (req, res) => {
        say({ event: 'method', name: req.methodName, requestId: req.requestId, payload: req.payload });
        res.send(200, { method: req.methodName, got: req.payload }, (e) => {
          if (e) { say({ event: 'error', where: 'method-response', message: e.message }); process.exit(1); }
          say({ event: 'answered', name: req.methodName });
          ++answered;
          done();
        });
      });
    }
    say({ event: 'methods-registered' });
  }
  if (Number(commands) === 0 && methods === 0) client.close(() => process.exit(0));
});
setTimeout(() => { say({ event: 'error', where: 'timeout' }); process.exit(2); }, 60000);
