// psk_device.js — one TLS-PSK device driven by MQTT.js over Node's TLS (which, unlike
// mosquitto_pub --psk, can be held to TLS 1.2), for sacgate's integration tests:
//   node psk_device.js PORT DEVICE_ID KEY_HEX IDENTITY MAX_VERSION [CLIENT_ID]
// connects (no password), publishes one QoS 1 telemetry message, and prints one JSON line:
// {"ok": true, "protocol": "TLSv1.2", "cipher": ...} or {"ok": false, "error": ...}; exit 0 / 1.
'use strict';
const mqtt = require('mqtt');

const [port, deviceId, keyHex, identity, maxVersion, clientIdArg] = process.argv.slice(2);
const clientId = clientIdArg || deviceId;
const say = (o) => { console.log(JSON.stringify(o)); };
const client = mqtt.connect({
  protocol: 'mqtts', host: '127.0.0.1', port: Number(port), protocolVersion: 4, clientId,
  username: `localhost/${clientId}/?api-version=2021-04-12`, clean: true, reconnectPeriod: 0,
  connectTimeout: 10000, rejectUnauthorized: false, maxVersion, minVersion: 'TLSv1.2',
  ciphers: 'ECDHE-PSK-CHACHA20-POLY1305:PSK-AES128-GCM-SHA256:TLS_AES_128_GCM_SHA256',
  pskCallback: () => ({ psk: Buffer.from(keyHex, 'hex'), identity }),
});
let done = false;
const finish = (o, code) => {
  if (done) return;
  done = true;
  say(o);
  client.end(true, () => process.exit(code));
  setTimeout(() => process.exit(code), 2000);
};
client.on('connect', () => {
  const sock = client.stream;
  const info = { protocol: sock.getProtocol && sock.getProtocol(), cipher: sock.getCipher && sock.getCipher().name,
                 peerCertificate: !!(sock.getPeerCertificate && Object.keys(sock.getPeerCertificate()).length) };
  client.publish(`devices/${clientId}/messages/events/via=node`, `node-${info.protocol}`, { qos: 1 }, (err) => {
    if (err) finish({ ok: false, error: err.message, ...info }, 1);
    else finish({ ok: true, ...info }, 0);
  });
});
client.on('error', (e) => finish({ ok: false, error: e.message, code: e.code }, 1));
client.on('close', () => finish({ ok: false, error: 'closed' }, 1));
setTimeout(() => finish({ ok: false, error: 'timeout' }, 1), 20000);
