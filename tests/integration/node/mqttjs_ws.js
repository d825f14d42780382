// mqttjs_ws.js — one device driven by MQTT.js (npm mqtt) over wss:// against sacgate's WebSocket
// port, printing one JSON line per event for the Python test:
//   node mqttjs_ws.js URL DEVICE_ID USERNAME PASSWORD CA_FILE EVENTS COMMANDS
// subscribes to its devicebound topic, publishes EVENTS telemetry messages at QoS 1 (each waits
// for its PUBACK), then waits for COMMANDS cloud-to-device messages and exits 0; 1 on any error,
// 2 after 60 s.
'use strict';
const fs = require('fs');
const mqtt = require('mqtt');

const [url, deviceId, username, password, ca, events, commands] = process.argv.slice(2);
const say = (o) => console.log(JSON.stringify(o));
const client = mqtt.connect(url, {
  clientId: deviceId, username, password, protocolVersion: 4, clean: true, reconnectPeriod: 0,
  ca: fs.readFileSync(ca), servername: 'localhost',
});
let received = 0;
client.on('message', (topic, payload) => {
  say({ event: 'message', topic, data: payload.toString() });
  // MQTT.js sends the PUBACK once this handler has returned: end on a later turn of the loop
  if (++received >= Number(commands))
    setTimeout(() => client.end(false, () => { say({ event: 'closed' }); process.exit(0); }), 200);
});
client.on('error', (e) => { say({ event: 'error', where: 'client', message: e.message }); process.exit(1); });
client.on('close', () => say({ event: 'close' }));
client.on('connect', async () => {
  say({ event: 'open' });
  try {
    await client.subscribeAsync(`devices/${deviceId}/messages/devicebound/#`, { qos: 1 });
    say({ event: 'subscribed' });
    for (let i = 0; i < Number(events); i++)
      await client.publishAsync(`devices/${deviceId}/messages/events/seq=${i}`, JSON.stringify({ seq: i }), { qos: 1 });
  } catch (e) {
    say({ event: 'error', where: 'publish', message: e.message });
    process.exit(1);
  }
  say({ event: 'sent', count: Number(events) });
  if (Number(commands) === 0) client.end(false, () => process.exit(0));
});
setTimeout(() => { say({ event: 'error', where: 'timeout' }); process.exit(2); }, 60000);
