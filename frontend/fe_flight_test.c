/* fe_flight_test.c — the per-publish acknowledgement bookkeeping: the oldest waiting publish
 * decides the ack deadline, whatever later publishes are acknowledged meanwhile. */
#include "fe_flight.h"
#include "sg_test.h"

int main(void)
{
    fe_flight_t f[16];
    uint16_t n = 0;
    fe_flight_add(f, &n, 1, 100);   /* this one is lost in a shard that dies */
    fe_flight_add(f, &n, 2, 101);
    fe_flight_add(f, &n, 3, 105);
    /* later publishes are acknowledged: the deadline still counts from 100 */
    CHECK(fe_flight_remove(f, &n, 2));
    CHECK(fe_flight_remove(f, &n, 3));
    CHECK(n == 1 && f[0].pid == 1 && f[0].at == 100);
    fe_flight_add(f, &n, 4, 200);
    CHECK(f[0].at == 100);
    /* the oldest acknowledged: the next one decides */
    CHECK(fe_flight_remove(f, &n, 1));
    CHECK(n == 1 && f[0].pid == 4 && f[0].at == 200);
    /* unknown and repeated ids */
    CHECK(!fe_flight_remove(f, &n, 9));
    fe_flight_add(f, &n, 4, 210);   /* the device sent 4 again before its acknowledgement */
    CHECK(fe_flight_remove(f, &n, 4));
    CHECK(n == 1 && f[0].at == 210);
    CHECK(fe_flight_remove(f, &n, 4));
    CHECK(n == 0);
    CHECK(!fe_flight_remove(f, &n, 4));
    TEST_DONE();
}
