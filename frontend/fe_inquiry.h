/* fe_inquiry.h — the device's side of inquiries (docs/inquiries.md): the topic a device asks on,
 * the subscription to the answers, the INQUIRY frame to its shard and the answer back. The topic
 * parser is pure, so the unit test and the fuzzer call it directly. */
#ifndef FE_INQUIRY_H
#define FE_INQUIRY_H

#include <stdbool.h>
#include <stddef.h>
#include "sg_mqtt.h"

/* "devices/{device}/inquiries/{name}/?$rid={rid}" ('$' may come as %24): name and rid views into
 * the topic. False for anything else, including another device's topic, a bad name or rid, or a
 * query with anything but the rid. */
typedef struct {
    const char *name;
    size_t name_len;
    const char *rid;
    size_t rid_len;
} fe_inquiry_topic_t;
bool fe_inquiry_topic(const char *device, size_t device_len, sg_mqtt_str_t topic, fe_inquiry_topic_t *out);

/* "devices/{device}/inquiries/res/#": the filter a device subscribes to for its answers. */
bool fe_inquiry_filter(const char *device, size_t device_len, sg_mqtt_str_t filter);

#endif
