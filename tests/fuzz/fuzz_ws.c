/* fuzz_ws.c — libFuzzer harness for the ws port's untrusted bytes (frontend/fe_ws.h): the first
 * byte picks the target. 0: the upgrade parser on the rest; 1: the rest fed to a fresh layer as
 * its upgrade request (buffering, the end search, the 4 KiB cap); otherwise a valid upgrade then
 * the rest as WebSocket frames, cut into reads whose sizes the first byte seeds. Aborts when the
 * layer breaks its own rules: MQTT bytes out of nowhere, output after a close, bad statuses. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fe_ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    size_t data, out;
    uint32_t max;
} sink_t;

static bool on_data(void *arg, const uint8_t *p, size_t n)
{
    sink_t *s = arg;
    (void)p;
    s->data += n;
    return true;
}

static bool on_write(void *arg, const uint8_t *p, size_t n)
{
    sink_t *s = arg;
    (void)p;
    s->out += n;
    return true;
}

static uint32_t on_max(void *arg) { return ((sink_t *)arg)->max; }

static const fe_ws_io_t IO = {on_data, on_write, on_max};

static void check_status(int st)
{
    if (st != 101 && st != 400 && st != 404 && st != 405 && st != 426 && st != 431 && st != 505)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    if (mode == 0) {
        fe_ws_upgrade_t u;
        sg_rc rc = fe_ws_upgrade_parse((const char *)data, size, &u);
        check_status(u.status);
        if ((rc == SG_OK) != (u.status == 101) || (rc == SG_OK && strlen(u.accept) != 28) || (rc != SG_OK && !u.error))
            abort();
        return 0;
    }
    sink_t s = {0, 0, 64 + mode * 16};
    fe_ws_t *ws = fe_ws_new(&IO, &s);
    if (!ws)
        return 0;
    const char *why = NULL;
    size_t fed = 0;
    if (mode != 1) {
        static const char req[] = "GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                  "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                  "Sec-WebSocket-Protocol: mqtt\r\n\r\n";
        if (fe_ws_input(ws, (const uint8_t *)req, sizeof req - 1, &why) != FE_WS_OK || !fe_ws_open(ws))
            abort();
        s.out = 0;
    }
    bool closed = false;
    size_t chunk = 1 + mode % 7;
    while (fed < size) {
        size_t n = size - fed < chunk ? size - fed : chunk;
        size_t out_before = s.out;
        fe_ws_rc_t rc = fe_ws_input(ws, data + fed, n, &why);
        if (closed && s.out != out_before)
            abort();   /* nothing goes out after the answer that closes */
        if (rc == FE_WS_CLOSE) {
            if (!why)
                abort();
            closed = true;
        } else if (rc != FE_WS_OK) {
            abort();
        }
        fed += n;
        chunk = chunk * 3 % 1021 + 1;
    }
    if (s.data > size || (mode == 1 && s.data > 0 && !memmem(data, size, "\r\n\r\n", 4)))
        abort();   /* MQTT bytes only ever come from the input, after a complete upgrade request */
    if (!closed && fe_ws_open(ws) && !fe_ws_send(ws, data, size))
        abort();
    fe_ws_destroy(&ws);
    return 0;
}
