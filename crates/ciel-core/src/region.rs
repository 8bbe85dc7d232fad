//! Residency: the only regions a Ciel deployment offers. This list is the platform's
//! France-only rule; nothing above it (policy, configuration) can add a region.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// ARM name, e.g. `francecentral`.
    pub name: &'static str,
    pub display_name: &'static str,
    pub regional_display_name: &'static str,
    pub city: &'static str,
    pub latitude: &'static str,
    pub longitude: &'static str,
    pub paired: &'static str,
}

pub const REGIONS: &[Region] = &[
    Region {
        name: "francecentral",
        display_name: "France Central",
        regional_display_name: "(Europe) France Central",
        city: "Paris",
        latitude: "46.3772",
        longitude: "2.3730",
        paired: "francesouth",
    },
    Region {
        name: "francesouth",
        display_name: "France South",
        regional_display_name: "(Europe) France South",
        city: "Marseille",
        latitude: "43.8345",
        longitude: "2.1972",
        paired: "francecentral",
    },
];

/// Azure accepts a location in any case and with spaces ("France Central"); normalise
/// to the ARM name and return None when the location is not one of ours.
pub fn normalize(location: &str) -> Option<&'static Region> {
    let key: String = location
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    REGIONS.iter().find(|r| r.name == key)
}

pub fn allowed_names() -> String {
    REGIONS
        .iter()
        .map(|r| r.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn normalises_display_names() {
        assert_eq!(
            normalize("France Central").map(|r| r.name),
            Some("francecentral")
        );
        assert_eq!(
            normalize("FRANCESOUTH").map(|r| r.name),
            Some("francesouth")
        );
        assert!(normalize("westeurope").is_none());
        assert!(normalize("").is_none());
    }
}
