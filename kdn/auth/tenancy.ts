import { KdnError } from '../../common/errors.ts';
import { NamespaceSchema } from '../namespace.ts';
import { TenantSchema } from './api-keys.ts';

/**
 * Namespaces belong to tenants. Inside kdn a namespace is always scoped: "<tenant>/<namespace>", or
 * "_shared/<namespace>" for a namespace declared shared (tenant ids cannot start with "_"). Everything below the
 * API (catalog, retrieval index, manifests at manifests/<scope>/<id>.json, document ids) works on the scoped name,
 * so two tenants' "docs" never meet. Clients only ever see the plain name.
 */
export const SHARED_SCOPE = '_shared';

export type Access = 'read' | 'write';

/** Shared namespace name -> tenants that may write (upload, delete) in it. */
export type SharedNamespaces = ReadonlyMap<string, ReadonlySet<string>>;

/**
 * Parses KDN_SHARED_NAMESPACES: "public=tenantA+tenantB,handbook=tenantA,archive". Every tenant may read and query
 * a shared namespace; only the tenants after "=" may write it (none: read-only).
 */
export function parseSharedNamespaces(text: string): SharedNamespaces {
  const shared = new Map<string, ReadonlySet<string>>();
  for (const item of text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')) {
    const [name = '', owners = ''] = item.split('=', 2);
    const ns = NamespaceSchema.safeParse(name.trim());
    const tenants = owners
      .split('+')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    const bad = tenants.find((t) => !TenantSchema.safeParse(t).success);
    if (!ns.success || bad !== undefined) {
      throw new KdnError(
        'INVALID_ARGUMENT',
        `KDN_SHARED_NAMESPACES entry "${item}" is invalid${bad === undefined ? ': bad namespace name' : `: bad tenant "${bad}"`}`,
        {
          hint: 'write KDN_SHARED_NAMESPACES="public=ownerTenant+otherOwner,readonly-ns"',
        },
      );
    }
    shared.set(ns.data, new Set(tenants));
  }
  return shared;
}

export class Tenancy {
  constructor(readonly shared: SharedNamespaces = new Map()) {}

  /**
   * The scoped name of `namespace` as `tenant` uses it. A shared namespace is the same for everyone; writing one is
   * FORBIDDEN to tenants that do not own it (its existence is public configuration, so 403 leaks nothing).
   */
  scope(tenant: string, namespace: string, access: Access): string {
    const owners = this.shared.get(namespace);
    if (owners === undefined) return `${tenant}/${namespace}`;
    if (access === 'write' && !owners.has(tenant)) {
      throw new KdnError('FORBIDDEN', `namespace "${namespace}" is shared and tenant "${tenant}" may only read it`, {
        hint:
          owners.size > 0 ? `its writers are configured in KDN_SHARED_NAMESPACES` : 'it is read-only (no owners in KDN_SHARED_NAMESPACES)',
      });
    }
    return `${SHARED_SCOPE}/${namespace}`;
  }

  /** Whether `tenant` may read what lives under the scoped name (its own, or a shared namespace). */
  canRead(tenant: string, scoped: string): boolean {
    return scoped.startsWith(`${tenant}/`) || (scoped.startsWith(`${SHARED_SCOPE}/`) && this.shared.has(publicName(scoped)));
  }
}

/** The plain namespace name of a scoped one. */
export function publicName(scoped: string): string {
  const slash = scoped.indexOf('/');
  return slash < 0 ? scoped : scoped.slice(slash + 1);
}

/** The tenant of a scoped name, or undefined for a shared namespace. */
export function tenantOf(scoped: string): string | undefined {
  const slash = scoped.indexOf('/');
  const owner = slash < 0 ? undefined : scoped.slice(0, slash);
  return owner === SHARED_SCOPE ? undefined : owner;
}
