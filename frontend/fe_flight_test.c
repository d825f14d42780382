/* fe_flight_test.c — the per-publish acknowledgement bookkeeping: the oldest waiting publish
 * decides the ack deadline, whatever later publishes are acknowledged meanwhile, and PUBACKs
 * leave in the order the publishes came. */
#include "fe_flight.h"
#include "sg_test.h"

/* Acknowledge pid and return the PUBACKs that may go now, as a number with one digit each. */
static unsigned ack(fe_flight_t *f, uint16_t *n, uint16_t pid)
{
    fe_flight_t *e = fe_flight_find(f, *n, pid), out;
    unsigned sent = 0;
    if (!e)
        return 0;
    e->acked = true;
    while (fe_flight_pop_acked(f, n, &out))
        sent = sent * 10 + out.pid;
    return sent;
}

int main(void)
{
    fe_flight_t f[16];
    uint16_t n = 0;
    fe_flight_add(f, &n, 1, 100, NULL, 0);   /* this one is lost in a shard that dies */
    fe_flight_add(f, &n, 2, 101, NULL, 0);
    fe_flight_add(f, &n, 3, 105, NULL, 0);
    /* later publishes are acknowledged: their PUBACKs wait, the deadline still counts from 100 */
    CHECK(ack(f, &n, 2) == 0);
    CHECK(ack(f, &n, 3) == 0);
    CHECK(n == 3 && f[0].pid == 1 && f[0].at == 100);
    fe_flight_add(f, &n, 4, 200, NULL, 0);
    /* the oldest acknowledged: it and the ones acknowledged after it go, in order */
    CHECK(ack(f, &n, 1) == 123);
    CHECK(n == 1 && f[0].pid == 4 && f[0].at == 200);
    /* unknown ids and ids acknowledged already */
    CHECK(ack(f, &n, 9) == 0 && n == 1);
    fe_flight_add(f, &n, 4, 210, NULL, 0);   /* the device sent 4 again before its acknowledgement */
    CHECK(ack(f, &n, 4) == 4);
    CHECK(n == 1 && f[0].at == 210);
    CHECK(ack(f, &n, 4) == 4);
    CHECK(n == 0);
    CHECK(ack(f, &n, 4) == 0);
    /* a refused publish keeps its frame and its place until acknowledged */
    uint8_t frame[3] = {1, 2, 3};
    fe_flight_add(f, &n, 7, 300, frame, sizeof frame);
    fe_flight_add(f, &n, 8, 301, NULL, 0);
    fe_flight_t *e = fe_flight_find(f, n, 7), out;
    CHECK(e == &f[0] && e->frame == frame && e->len == 3 && e->retry_at == 0 && e->refusals == 0);
    e->retry_at = 5000;
    CHECK(ack(f, &n, 8) == 0);                         /* 8 is durable first: its PUBACK waits */
    CHECK(fe_flight_find(f, n, 8) == NULL);            /* and it is no longer waiting itself */
    f[0].acked = true;
    CHECK(fe_flight_pop_acked(f, &n, &out) && out.frame == frame && out.retry_at == 5000);
    CHECK(fe_flight_pop_acked(f, &n, &out) && out.pid == 8 && n == 0);
    CHECK(!fe_flight_pop_acked(f, &n, &out));
    TEST_DONE();
}
