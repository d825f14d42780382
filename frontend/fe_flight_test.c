/* fe_flight_test.c — the per-publish acknowledgement bookkeeping: the oldest waiting publish
 * decides the ack deadline, whatever later publishes are acknowledged meanwhile. */
#include "fe_flight.h"
#include "sg_test.h"

int main(void)
{
    fe_flight_t f[16], out;
    uint16_t n = 0;
    fe_flight_add(f, &n, 1, 100, NULL, 0);   /* this one is lost in a shard that dies */
    fe_flight_add(f, &n, 2, 101, NULL, 0);
    fe_flight_add(f, &n, 3, 105, NULL, 0);
    /* later publishes are acknowledged: the deadline still counts from 100 */
    CHECK(fe_flight_remove(f, &n, 2, &out));
    CHECK(fe_flight_remove(f, &n, 3, &out));
    CHECK(n == 1 && f[0].pid == 1 && f[0].at == 100);
    fe_flight_add(f, &n, 4, 200, NULL, 0);
    CHECK(f[0].at == 100);
    /* the oldest acknowledged: the next one decides */
    CHECK(fe_flight_remove(f, &n, 1, &out));
    CHECK(n == 1 && f[0].pid == 4 && f[0].at == 200);
    /* unknown and repeated ids */
    CHECK(!fe_flight_remove(f, &n, 9, &out));
    fe_flight_add(f, &n, 4, 210, NULL, 0);   /* the device sent 4 again before its acknowledgement */
    CHECK(fe_flight_remove(f, &n, 4, &out));
    CHECK(n == 1 && f[0].at == 210);
    CHECK(fe_flight_remove(f, &n, 4, &out));
    CHECK(n == 0);
    CHECK(!fe_flight_remove(f, &n, 4, &out));
    /* a refused publish keeps its frame and its place until acknowledged */
    uint8_t frame[3] = {1, 2, 3};
    fe_flight_add(f, &n, 7, 300, frame, sizeof frame);
    fe_flight_add(f, &n, 8, 301, NULL, 0);
    fe_flight_t *e = fe_flight_find(f, n, 7);
    CHECK(e == &f[0] && e->frame == frame && e->len == 3 && e->retry_at == 0 && e->refusals == 0);
    e->retry_at = 5000;
    CHECK(fe_flight_remove(f, &n, 7, &out) && out.frame == frame && out.retry_at == 5000);
    CHECK(n == 1 && f[0].pid == 8 && fe_flight_find(f, n, 7) == NULL);
    TEST_DONE();
}
