#!/bin/sh
# Written by provision: routes to the pod CIDRs of the other nodes, and masquerading of pod
# traffic that leaves the cluster's pod and service ranges (pod-to-pod keeps its addresses).
set -e
{% for r in routes %}ip route replace {{ r.cidr }} via {{ r.via }}
{% endfor %}iptables -t nat -C POSTROUTING -s {{ pod_subnet }} ! -d {{ pod_subnet }} -m comment --comment provision-masquerade -j MASQUERADE 2>/dev/null || \
  iptables -t nat -A POSTROUTING -s {{ pod_subnet }} ! -d {{ pod_subnet }} -m comment --comment provision-masquerade -j MASQUERADE
iptables -C FORWARD -s {{ pod_subnet }} -m comment --comment provision-forward -j ACCEPT 2>/dev/null || \
  iptables -A FORWARD -s {{ pod_subnet }} -m comment --comment provision-forward -j ACCEPT
iptables -C FORWARD -d {{ pod_subnet }} -m comment --comment provision-forward -j ACCEPT 2>/dev/null || \
  iptables -A FORWARD -d {{ pod_subnet }} -m comment --comment provision-forward -j ACCEPT
